// The console's only way to the service: the /v1 API, with the API key of this browser session.

import { has, t } from "./i18n.js";

const KEY = "mtl.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = apiKey();
  if (key) h["X-API-Key"] = key;
  return h;
}

function failure(status, body, fallback) {
  const e = (body && body.error) || {};
  if (status === 401) window.dispatchEvent(new CustomEvent("mtl:unauthorized"));
  return new ApiError(status, e.code || `http_${status}`, e.message || fallback || `HTTP ${status}`, e);
}

/** JSON in, JSON out; throws ApiError with the API's error code and message. */
export async function api(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, signal, headers: headers() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the service cannot be reached");
  }
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json().catch(() => null) : null;
  if (!r.ok) throw failure(r.status, body, r.statusText);
  return body;
}

/** A protected file (image, video, audio) as an object URL; the caller revokes it. */
export async function apiBlobUrl(path) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) {
    const body = await r.json().catch(() => null);
    throw failure(r.status, body, r.statusText);
  }
  return URL.createObjectURL(await r.blob());
}

/** A multipart POST (or PUT) with upload progress (fetch has none): onProgress(fraction 0..1). */
export function upload(path, form, onProgress, method = "POST") {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(failure(xhr.status, xhr.response, xhr.statusText));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload was interrupted"));
    xhr.send(form);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll a job until it finished or failed; onProgress(job) on every read. */
export async function waitJob(jobId, onProgress, { interval = 400, timeoutMs = 15 * 60 * 1000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (onProgress) onProgress(job);
    if (["finished", "failed", "canceled", "stopped"].includes(job.status)) return job;
    await sleep(interval);
  }
  throw new ApiError(0, "timeout", "the job did not finish in time");
}

// Error codes in plain words, in the interface's language (i18n/<lang>.js, keys err.<code>);
// the API's own message follows as the detail.
export function plainError(err) {
  if (!err) return { title: t("err.generic"), detail: "" };
  const code = err.code || (err.details && err.details.code) || "";
  const title = code && has(`err.${code}`) ? t(`err.${code}`) : t("err.generic");
  const detail = err.message && err.message !== title ? err.message : "";
  return { title, detail, code };
}

/** A failed job's error ({type, message, code}) in plain words. */
export function plainJobError(error) {
  if (!error) return { title: t("err.job_failed"), detail: "" };
  const title = error.code && has(`err.${error.code}`) ? t(`err.${error.code}`)
    : (error.type === "DependencyFailed" ? t("err.dependency") : t("err.job_failed"));
  return { title, detail: error.message || "", code: error.code || error.type };
}
