// The operators' console: rooms, avatars, renders and the fleet, through the /v1 API only.

import { api, apiBlobUrl, apiKey, plainError, plainJobError, setApiKey, upload, waitJob } from "./api.js";
import { AudioMeter, LivePlayer, hlsSupported } from "./player.js";
import { MouthPlayer } from "./mouthplayer.js";

const $ = (sel) => document.querySelector(sel);

/** A DOM element: h("td", {class: "x"}, "text", child, ...); strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function showError(box, err, isJob = false) {
  const { title, detail } = isJob ? plainJobError(err) : plainError(err);
  box.replaceChildren(h("b", {}, title), detail ? h("span", {}, detail) : "");
  box.hidden = false;
}

function clock(t) {
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
}

const state = {
  tab: "rooms",
  rooms: [],
  avatars: [],
  room: null,  // the room being watched
  feed: null,  // its WebSocket feed (the conversation)
  route: "flv",
  renders: [],
  timers: {},
};
// For people and tests: the console's live objects.
window.mtlConsole = state;

// ---------- API key and banner ----------

function banner(text, kind = "") {
  const b = $("#banner");
  if (!text) { b.hidden = true; return; }
  b.textContent = text;
  b.className = `banner ${kind}`;
  b.hidden = false;
}

function syncKeyForm() {
  $("#api-key").value = apiKey();
  $("#key-form").classList.toggle("set", !!apiKey());
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setApiKey($("#api-key").value.trim());
  syncKeyForm();
  banner("");
  refreshAll();
});
$("#key-clear").addEventListener("click", () => { setApiKey(""); syncKeyForm(); });
window.addEventListener("mtl:unauthorized", () => {
  banner("This service needs an API key: type it at the top right (kept for this browser session only).", "error");
  $("#api-key").focus();
});

// ---------- tabs ----------

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === `tab-${name}`);
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  refreshAll();
}
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));

// ---------- rooms ----------

const player = new LivePlayer($("#live-video"), { onState: (s, text) => { $("#live-note").textContent = text; } });
state.player = player;

function roomName(r) {
  return r.zbjname.includes("*") ? r.username : r.zbjname;
}

function publisherLabel(name) {
  if (!name) return "–";
  const pid = name.split(".").find((p) => /^\d+$/.test(p));  // stream.<host>.<pid>.<id>
  return pid ? `pid ${pid}` : name.slice(0, 14);
}

async function refreshRooms() {
  try {
    state.rooms = await api("/v1/rooms");
  } catch (err) {
    if (err.code !== "unauthorized") banner(plainError(err).title, "error");
    return;
  }
  const body = $("#rooms-table tbody");
  body.replaceChildren(...state.rooms.map((r) => h("tr", { class: state.room && state.room.id === r.id ? "selected" : "", dataset: { room: r.id } },
    h("td", { title: r.zbjname }, h("div", {}, roomName(r)), h("div", { class: "sub mono", title: r.stream_key }, `${r.stream_key.slice(0, 12)}…`)),
    h("td", {}, h("span", { class: `badge ${r.state}`, dataset: { state: r.state }, title: r.dark_reason || null },
      r.dark_reason ? `${r.state} · ${r.dark_reason.replaceAll("_", " ")}` : r.state)),
    h("td", { class: "queue" }, String(r.pending_utterances)),
    h("td", { class: "viewers", title: Object.entries(r.viewers_by_route || {}).map(([k, v]) => `${k} ${v}`).join(", ") },
      r.viewers === null || r.viewers === undefined ? "–" : String(r.viewers)),
    h("td", { class: "sub mono", title: r.publisher || "no stream worker publishes it" }, publisherLabel(r.publisher)),
    h("td", { class: "actions" },
      h("button", { onclick: () => openRoom(r.id) }, "Open"), " ",
      h("button", { class: "danger", onclick: () => closeRoom(r) }, "Close")))));
  $("#rooms-empty").hidden = state.rooms.length > 0;
  $("#rooms-count").textContent = `(${state.rooms.length})`;
  if (state.room) {
    const current = state.rooms.find((r) => r.id === state.room.id);
    if (!current) { closeView("The room was closed."); return; }
    state.room = current;
    const badge = $("#room-state");
    badge.textContent = current.state + (current.dark_reason ? ` (${current.dark_reason.replaceAll("_", " ")})` : "")
      + (current.pending_utterances ? ` · ${current.pending_utterances} queued` : "");
    badge.className = `badge ${current.state}`;
    refreshEvents();
  }
}

async function refreshEvents() {
  if (!state.room) return;
  try {
    const events = await api(`/v1/rooms/${state.room.id}/events`);
    $("#room-events").replaceChildren(...events.slice(-12).reverse().map((e) => h("li", {},
      h("time", {}, clock(e.t)), e.event,
      e.engine ? ` (${e.engine})` : "", e.error ? ` – ${e.error}` : "")));
  } catch (err) { /* the room list shows closure */ }
}

function flvUrl(room) {
  // Same origin as the console (the API serves the relay), whatever host name the operator used.
  return `/live/${encodeURIComponent(room.stream_key)}.flv`;
}

function openRoom(id, route) {
  const room = state.rooms.find((r) => r.id === id);
  if (!room) return;
  state.room = room;
  if (route) state.route = route;
  if (!state.meter) state.meter = new AudioMeter($("#live-video"));
  state.meter.resume();
  $("#room-route").value = state.route;
  $("#room-detail").hidden = false;
  $("#room-placeholder").hidden = true;
  $("#room-title").textContent = roomName(room);
  $("#say-error").hidden = true;
  $("#room-urls").replaceChildren(...Object.entries(room.urls).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]).flat());
  const video = $("#live-video");
  video.muted = false;
  if (state.route === "hls") player.play("hls", room.urls.hls);
  else player.play("flv", flvUrl(room));
  followFeed(room);
  refreshRooms();
}

function closeView(note) {
  player.stop();
  if (state.feed) { state.feed.close(); state.feed = null; }
  state.room = null;
  $("#room-detail").hidden = true;
  $("#room-placeholder").hidden = false;
  if (note) $("#room-placeholder").firstElementChild.textContent = note;
}

async function closeRoom(room) {
  if (!confirm(`Close room ${roomName(room)}? Its stream stops.`)) return;
  try {
    await api(`/v1/rooms/${room.id}`, { method: "DELETE" });
    if (state.room && state.room.id === room.id) closeView("Room closed.");
  } catch (err) { banner(plainError(err).title, "error"); }
  refreshRooms();
}

$("#room-close-view").addEventListener("click", () => closeView("Open a room to watch it live and make it speak."));
$("#room-route").addEventListener("change", (e) => { if (state.room) openRoom(state.room.id, e.target.value); });
$("#room-route").querySelector("option[value=hls]").disabled = !hlsSupported($("#live-video"));
$("#live-video").addEventListener("click", (e) => { e.target.muted = false; if (state.meter) state.meter.resume(); });

$("#room-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("#room-form-error");
  box.hidden = true;
  const body = {};
  if ($("#room-username").value.trim()) body.username = $("#room-username").value.trim();
  if ($("#room-avatar").value) body.avatar_id = $("#room-avatar").value;
  if ($("#room-language").value) body.language = $("#room-language").value;
  if ($("#room-ttl").value) body.ttl_s = Number($("#room-ttl").value);
  try {
    const room = await api("/v1/rooms", { method: "POST", json: body });
    $("#room-username").value = "";
    await refreshRooms();
    openRoom(room.id);
  } catch (err) { showError(box, err); }
});

async function say(body) {
  const box = $("#say-error");
  box.hidden = true;
  if (!state.room) return;
  // "Ask": a message the room answers (it first stops what it is saying); otherwise it says the text.
  const path = $("#say-converse").checked ? "messages" : "say";
  try {
    await api(`/v1/rooms/${state.room.id}/${path}`, { method: "POST", json: body });
    refreshRooms();
  } catch (err) { showError(box, err); }
}

// ---------- conversation: the room's WebSocket feed ----------

function followFeed(room) {
  if (state.feed) state.feed.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey() ? `?key=${encodeURIComponent(apiKey())}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/rooms/${room.id}/ws${key}`);
  state.feed = ws;
  let pending = null;
  ws.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.event === "mouth") return;  // per-frame values: for front-ends animating their own character
    // Text arrives token by token: redraw the transcript at most five times a second.
    if (!pending) pending = setTimeout(() => { pending = null; refreshConversation(); }, 200);
  };
  refreshConversation();
}

async function refreshConversation() {
  if (!state.room) return;
  try {
    const messages = await api(`/v1/rooms/${state.room.id}/messages`);
    $("#conversation").replaceChildren(...messages.map((m) => h("li", { class: `msg ${m.role} ${m.status}` },
      h("span", { class: "who" }, m.role === "user" ? "user" : (m.responder || "room")),
      h("span", { class: "text" }, m.role === "assistant" && m.status === "generating" ? (m.generated || "…") : (m.text || "")),
      h("span", { class: "muted" }, ` ${m.status}${m.fallback ? ` (fallback: ${m.fallback.reason})` : ""}`))));
  } catch (err) { /* the room list shows a closed room */ }
}

$("#say-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("#say-text").value.trim();
  if (!text) return;
  $("#say-button").disabled = true;
  await say({ text });
  $("#say-button").disabled = false;
  $("#say-text").value = "";
});
$("#say-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#say-form").requestSubmit(); }
});
$("#say-audio").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file || !state.room) return;
  const form = new FormData();
  form.append("file", file);
  try {
    const up = await upload("/v1/files", form);
    await say({ audio: up.file });
  } catch (err) { showError($("#say-error"), err); }
});
$("#interrupt-button").addEventListener("click", async () => {
  if (!state.room) return;
  try {
    await api(`/v1/rooms/${state.room.id}/interrupt`, { method: "POST" });
    refreshRooms();
  } catch (err) { showError($("#say-error"), err); }
});

// The meter and the player's own figures, ten times a second.
setInterval(() => {
  if (!state.room || !state.meter) return;
  $("#live-meter").style.width = `${Math.min(100, state.meter.level * 400)}%`;
  const v = $("#live-video");
  $("#live-stats").textContent = `${state.route.toUpperCase()} · buffer ${player.bufferAhead().toFixed(2)} s` +
    (v.videoWidth ? ` · ${v.videoWidth}×${v.videoHeight}` : "");
}, 100);

// ---------- avatars ----------

const thumbs = new Map();  // avatar id -> object URL

async function thumbnail(id, el) {
  let url = thumbs.get(id);
  if (!url) {
    try {
      url = await apiBlobUrl(`/v1/avatars/${encodeURIComponent(id)}/image?max_side=320`);
      thumbs.set(id, url);
    } catch (err) { return; }
  }
  el.style.backgroundImage = `url("${url}")`;
}

async function refreshAvatars() {
  try {
    state.avatars = await api("/v1/avatars");
  } catch (err) { return; }
  const ready = state.avatars.filter((a) => a.status === "ready");
  for (const sel of [$("#room-avatar"), $("#render-avatar")]) {
    const keep = sel.value;
    sel.replaceChildren(...ready.map((a) => h("option", { value: a.id }, a.id)));
    if (keep && ready.some((a) => a.id === keep)) sel.value = keep;
  }
  if (state.tab !== "avatars") return;
  $("#avatars-count").textContent = `(${state.avatars.length})`;
  $("#avatar-gallery").replaceChildren(...state.avatars.map((a) => {
    const m = a.manifest || {};
    const thumb = h("div", { class: "thumb", role: "img", "aria-label": a.id });
    if (a.status === "ready") thumbnail(a.id, thumb);
    const enrolled = m.enrollment ? "own mouth (enrolled)" : "warp";
    return h("div", { class: "avatar-card", dataset: { avatar: a.id } }, thumb,
      h("div", { class: "meta" },
        h("b", { title: a.id }, a.id),
        h("div", { class: "row" }, h("span", { class: `badge ${a.status}` }, a.status),
          h("button", { class: "danger", onclick: () => deleteAvatar(a.id) }, "Delete")),
        m.width ? h("span", { class: "muted" }, `${m.kind || ""} ${m.width}×${m.height}, ${m.frames} frames · ${enrolled}`) : "",
        a.error ? h("span", { class: "err" }, plainJobError(a.error).title) : ""));
  }));
}

async function deleteAvatar(id) {
  if (!confirm(`Delete avatar ${id} and its cache?`)) return;
  try {
    await api(`/v1/avatars/${encodeURIComponent(id)}`, { method: "DELETE" });
    URL.revokeObjectURL(thumbs.get(id) || "");
    thumbs.delete(id);
  } catch (err) { banner(plainError(err).title, "error"); }
  refreshAvatars();
}

function progress(prefix, fraction, phase, cls = "") {
  const block = $(`#${prefix}-progress`);
  block.hidden = false;
  block.className = `progress-block ${cls}`;
  $(`#${prefix}-bar`).style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
  $(`#${prefix}-pct`).textContent = `${Math.round(fraction * 100)}%`;
  $(`#${prefix}-phase`).textContent = phase;
  block.dataset.phase = cls || "running";
}

$("#avatar-file").addEventListener("change", (e) => {
  $("#avatar-file-name").textContent = e.target.files[0] ? e.target.files[0].name : "no file chosen";
});

$("#avatar-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("#avatar-error");
  box.hidden = true;
  const file = $("#avatar-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  if ($("#avatar-id").value.trim()) form.append("avatar_id", $("#avatar-id").value.trim());
  const sample = $("#avatar-sample").files[0];
  if (sample) form.append("speech_sample", sample);
  $("#avatar-submit").disabled = true;
  // Upload counts for the first 30% of the bar, preparation for the rest.
  progress("avatar", 0, "uploading…");
  try {
    const accepted = await upload("/v1/avatars", form, (f) => progress("avatar", 0.3 * f, "uploading…"));
    progress("avatar", 0.3, "preparing…");
    const job = await waitJob(accepted.job_id, (j) => {
      const label = j.status === "queued" ? "waiting for a worker…" : "preparing…";
      progress("avatar", 0.3 + 0.7 * (j.progress || 0), label);
    });
    if (job.status === "finished") {
      progress("avatar", 1, `ready: ${accepted.avatar_id}`, "done");
      $("#avatar-form").reset();
      $("#avatar-file-name").textContent = "no file chosen";
    } else {
      progress("avatar", 1, "failed", "failed");
      showError(box, job.error, true);
    }
  } catch (err) {
    progress("avatar", 1, "failed", "failed");
    showError(box, err);
  } finally {
    $("#avatar-submit").disabled = false;
    refreshAvatars();
  }
});

// ---------- renders ----------

const mouth = new MouthPlayer($("#mouth-canvas"), $("#mouth-audio"));
state.mouth = mouth;

$("#render-audio").addEventListener("change", (e) => {
  $("#render-audio-name").textContent = e.target.files[0] ? e.target.files[0].name : "";
});

$("#render-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("#render-error");
  box.hidden = true;
  const avatar = $("#render-avatar").value;
  const text = $("#render-text").value.trim();
  const file = $("#render-audio").files[0];
  const engine = $("#render-engine").value || undefined;
  if (!file && !text) { showError(box, { code: "missing_parameter", message: "type a text or choose an audio file" }); return; }
  progress("render", 0, "submitting…");
  try {
    let accepted;
    if (file) {
      const form = new FormData();
      form.append("avatar_id", avatar);
      form.append("audio", file);
      if (engine) form.append("engine", engine);
      accepted = await upload("/v1/lipsync/upload", form, (f) => progress("render", 0.1 * f, "uploading…"));
    } else {
      accepted = await api("/v1/lipsync", { method: "POST", json: { avatar_id: avatar, text, engine } });
    }
    const job = await waitJob(accepted.job_id, (j) =>
      progress("render", 0.1 + 0.9 * (j.progress || 0), j.status === "started" ? "rendering…" : "waiting…"));
    if (job.status !== "finished") {
      progress("render", 1, "failed", "failed");
      showError(box, job.error, true);
      return;
    }
    progress("render", 1, "done", "done");
    const item = { id: job.id, avatar, label: text ? text.slice(0, 40) : file.name, result: job.result };
    state.renders.unshift(item);
    $("#render-text").value = "";
    listRenders();
    showRender(item);
  } catch (err) {
    progress("render", 1, "failed", "failed");
    showError(box, err);
  }
});

function listRenders() {
  $("#render-list").replaceChildren(...state.renders.map((r) => h("li", {},
    h("span", {}, h("b", {}, r.avatar), " · ", r.label),
    h("button", { onclick: () => showRender(r) }, "Show"))));
}

async function showRender(item) {
  $("#render-view").hidden = false;
  $("#render-placeholder").hidden = true;
  $("#render-title").textContent = `${item.avatar}: ${item.label}`;
  const video = $("#render-video");
  if (video.dataset.url) URL.revokeObjectURL(video.dataset.url);
  const url = await apiBlobUrl(item.result.url);
  video.dataset.url = url;
  video.src = url;
  video.play().catch(() => {});
  // The video-less player: portrait + landmarks + mouth series + the render's own audio.
  const [portraitUrl, face, series, audioUrl] = await Promise.all([
    apiBlobUrl(`/v1/avatars/${encodeURIComponent(item.avatar)}/image?max_side=0`),
    api(`/v1/avatars/${encodeURIComponent(item.avatar)}/face`),
    api(`/v1/jobs/${item.id}/mouth`),
    apiBlobUrl(`/v1/files/${item.result.audio}`),
  ]);
  const img = new Image();
  img.src = portraitUrl;
  await img.decode();
  const audio = $("#mouth-audio");
  audio.src = audioUrl;
  mouth.load(img, face, series);
}

$("#mouth-play").addEventListener("click", () => {
  const audio = $("#mouth-audio");
  $("#render-video").pause();
  audio.currentTime = 0;
  audio.play();
});

// ---------- fleet ----------

async function refreshFleet() {
  let fleet;
  try {
    fleet = await api("/v1/fleet?recent=25");
  } catch (err) { return; }
  $("#queues-table tbody").replaceChildren(...Object.entries(fleet.queues).map(([kind, q]) => h("tr", {},
    h("td", {}, kind), h("td", {}, String(q.queued)), h("td", {}, String(q.started)),
    h("td", {}, String(q.failed)),
    h("td", {}, h("span", { class: `badge ${q.workers ? "ready" : "failed"}` }, String(q.workers))))));
  const streams = Object.entries(fleet.stream_workers);
  $("#streams-table tbody").replaceChildren(...(streams.length ? streams.map(([name, n]) => h("tr", {},
    h("td", { class: "mono" }, name), h("td", {}, String(n))))
    : [h("tr", {}, h("td", { colspan: 2, class: "empty" }, "no stream worker alive"))]));
  $("#rooms-open").textContent = `${fleet.rooms_open} open room(s)`;
  $("#jobs-table tbody").replaceChildren(...fleet.recent_jobs.map((j) => h("tr", {},
    h("td", {}, clock(j.created_at)), h("td", {}, j.kind),
    h("td", {}, h("span", { class: `badge ${j.status}` }, j.status)),
    h("td", { class: "mono", title: j.id }, j.id.slice(0, 8)),
    h("td", { class: "err" }, j.error ? `${plainJobError(j.error).title} ${j.error.message || ""}` : ""))));
}

// ---------- refresh loop ----------

function refreshAll() {
  refreshAvatars();
  if (state.tab === "rooms") refreshRooms();
  if (state.tab === "fleet") refreshFleet();
}

setInterval(() => {
  if (document.hidden) return;
  if (state.tab === "rooms") refreshRooms();
  else if (state.tab === "fleet") refreshFleet();
  else if (state.tab === "avatars") refreshAvatars();
}, 2000);

const TABS = ["rooms", "avatars", "renders", "fleet"];
function tabFromHash() {
  const name = (location.hash || "").slice(1);
  return TABS.includes(name) ? name : "rooms";
}
window.addEventListener("hashchange", () => { if (tabFromHash() !== state.tab) showTab(tabFromHash()); });

syncKeyForm();
showTab(tabFromHash());
state.openRoom = openRoom;
state.refreshRooms = refreshRooms;
