// The console's only way to the service: the /v1 API, with the API key of this browser session.

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

/** A multipart POST with upload progress (fetch has none): onProgress(fraction 0..1). */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
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

// Error codes in plain words (the API's message follows as the detail).
const PLAIN = {
  unauthorized: "The API key is missing or wrong. Type it in the key box at the top right.",
  network: "The service cannot be reached. Is the fleet running?",
  read_only: "This one is built in (the demo avatar, the default room) and cannot be changed or deleted.",
  not_owner: "That avatar id belongs to another API key: choose another id.",
  no_face: "No face was found in the picture or video.",
  several_faces: "More than one face was found: use a picture or video of one person.",
  face_too_small: "The face is too small: use a closer picture or video.",
  frames_without_face: "The face is lost in too many frames of the video.",
  undecodable: "The file could not be read as a video or picture.",
  undecodable_audio: "The file could not be read as audio.",
  undecodable_video: "The file is not a video or picture this service can read.",
  unsupported_media: "This kind of file is not accepted.",
  too_long: "The video is too long.",
  video_too_long: "The video is too long.",
  image_too_large: "The picture is too large.",
  upload_too_large: "The file is too large.",
  empty_upload: "The file is empty.",
  body_too_large: "The request is too large.",
  sample_undecodable: "The speech sample must be a video of the presenter talking.",
  sample_no_audio: "The speech sample has no sound.",
  sample_silent: "The speech sample is silent.",
  sample_no_face: "No face was found in the speech sample.",
  sample_several_faces: "The speech sample shows more than one face.",
  sample_duration: "The speech sample is too short or too long.",
  sample_other_person: "The speech sample shows someone else: use a clip of the same presenter talking.",
  avatar_not_ready: "The avatar is not ready yet.",
  unknown_avatar: "There is no such avatar.",
  unknown_room: "The room is closed or does not exist.",
  not_enrolled: "This avatar has no talking footage for the exemplar engine: choose auto or warp.",
  engine_unavailable: "This engine's model weights are not installed.",
  audio_too_long: "The audio is too long.",
  text_too_long: "The text is too long.",
  invalid_input: "Some input is not valid.",
  missing_parameter: "Something required is missing.",
};

export function plainError(err) {
  if (!err) return { title: "Something went wrong.", detail: "" };
  const code = err.code || (err.details && err.details.code) || "";
  const title = PLAIN[code] || "Something went wrong.";
  const detail = err.message && err.message !== title ? err.message : "";
  return { title, detail, code };
}

/** A failed job's error ({type, message, code}) in plain words. */
export function plainJobError(error) {
  if (!error) return { title: "The job failed.", detail: "" };
  const title = PLAIN[error.code] || (error.type === "DependencyFailed" ? "A step before this one failed." : "The job failed.");
  return { title, detail: error.message || "", code: error.code || error.type };
}
