// The operators' console: rooms, avatars, renders and the fleet, through the /v1 API only.
// Interface text comes from i18n/<lang>.js (t("key")); the watched room is in the URL (#rooms/<id>).

import { api, apiBlobUrl, apiKey, plainError, plainJobError, setApiKey, upload, waitJob } from "./api.js";
import { AudioMeter, LivePlayer, StreamLag, hlsSupported } from "./player.js";
import { MouthPlayer } from "./mouthplayer.js";
import { MaterialEditor } from "./material.js";
import { h } from "./dom.js";
import { applyI18n, bindLanguageSelect, t } from "./i18n.js";

const $ = (sel) => document.querySelector(sel);

function showError(box, err, isJob = false) {
  const { title, detail } = isJob ? plainJobError(err) : plainError(err);
  box.replaceChildren(h("b", {}, title), detail ? h("span", {}, detail) : "");
  box.hidden = false;
}

function showMessage(box, text) {
  box.replaceChildren(h("b", {}, text));
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
  wantedRoom: null,  // the room named in the URL, opened once the list has it
  feed: null,  // its WebSocket feed (the conversation)
  route: "flv",
  renders: [],
  timers: {},
  // The API's text limits (GET /v1/fleet `limits`); these defaults until it answers.
  limits: { text_chars: 2000, message_chars: 500, system_prompt_chars: 4000 },
};
// For people and tests: the console's live objects.
window.mtlConsole = state;

applyI18n();
bindLanguageSelect($("#lang"));

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
  loadLimits();
  refreshAll();
});
$("#key-clear").addEventListener("click", () => { setApiKey(""); syncKeyForm(); });
window.addEventListener("mtl:unauthorized", () => {
  banner(t("key.needed"), "error");
  $("#api-key").focus();
});

async function loadLimits() {
  try {
    const fleet = await api("/v1/fleet?recent=1");
    Object.assign(state.limits, fleet.limits || {});
    updateCounters();
  } catch (err) { /* the defaults stay */ }
}

// ---------- tabs and the URL ----------

const TABS = ["rooms", "avatars", "renders", "fleet"];

/** The URL's hash: #<tab>, or #rooms/<room id> for the room being watched. */
function setHash() {
  const want = state.tab === "rooms" && state.room ? `#rooms/${state.room.id}` : `#${state.tab}`;
  if (location.hash !== want) history.replaceState(null, "", want);
}

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === `tab-${name}`);
  setHash();
  refreshAll();
}
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));

function parseHash() {
  const [tab, roomId] = (location.hash || "").slice(1).split("/");
  return { tab: TABS.includes(tab) ? tab : "rooms", roomId: /^[0-9a-f]{32}$/.test(roomId || "") ? roomId : null };
}

window.addEventListener("hashchange", () => {
  const want = parseHash();
  if (want.roomId && (!state.room || state.room.id !== want.roomId)) state.wantedRoom = want.roomId;
  if (want.tab === "rooms" && !want.roomId && state.room) closeView(t("rooms.placeholder"));  // back to the list
  if (want.tab !== state.tab) showTab(want.tab);
  else refreshAll();
});

// ---------- rooms ----------

const player = new LivePlayer($("#live-video"), { onState: (s, text) => {
  state.playerState = s;
  $("#live-note").textContent = s === "muted" ? t("view.muted") : (s === "playing" ? "" : text);
} });
state.player = player;
// The measured latency: stream clock (room events) against what the player shows (player.js).
const lag = new StreamLag(player);
state.lag = lag;

function roomName(r) {
  return r.zbjname.includes("*") ? r.username : r.zbjname;
}

function publisherLabel(name) {
  if (!name) return "–";
  const pid = name.split(".").find((p) => /^\d+$/.test(p));  // stream.<host>.<pid>.<id>
  return pid ? `pid ${pid}` : name.slice(0, 14);
}

function darkLabel(reason) {
  const key = `dark.${reason}`;
  const text = t(key);
  return text === key ? reason.replaceAll("_", " ") : text;
}

function stateLabel(r) {
  return t(`state.${r.state}`) + (r.dark_reason ? ` · ${darkLabel(r.dark_reason)}` : "");
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
    h("td", { class: "room-cell", title: r.zbjname }, h("div", { class: "name" }, roomName(r)),
      h("div", { class: "sub mono", title: r.stream_key }, `${r.stream_key.slice(0, 12)}…`)),
    h("td", {}, h("span", { class: `badge ${r.state}`, dataset: { state: r.state }, title: r.dark_reason || null }, stateLabel(r))),
    h("td", { class: "queue opt" }, String(r.pending_utterances)),
    h("td", { class: "viewers opt", title: Object.entries(r.viewers_by_route || {}).map(([k, v]) => `${k} ${v}`).join(", ") },
      r.viewers === null || r.viewers === undefined ? "–" : String(r.viewers)),
    h("td", { class: "sub mono opt", title: r.publisher || t("rooms.no_publisher") }, publisherLabel(r.publisher)),
    h("td", { class: "actions" },
      h("button", { onclick: () => openRoom(r.id) }, t("rooms.open")),
      h("button", { class: "danger", onclick: () => closeRoom(r) }, t("rooms.close"))))));
  $("#rooms-empty").hidden = state.rooms.length > 0;
  $("#rooms-count").textContent = `(${state.rooms.length})`;
  if (state.wantedRoom) {
    const id = state.wantedRoom;
    state.wantedRoom = null;
    if (state.rooms.some((r) => r.id === id)) { openRoom(id); return; }
  }
  if (state.room) {
    const current = state.rooms.find((r) => r.id === state.room.id);
    if (!current) { closeView(t("rooms.closed")); return; }
    state.room = current;
    const badge = $("#room-state");
    badge.textContent = stateLabel(current)
      + (current.pending_utterances ? ` · ${t("state.queued", { n: current.pending_utterances })}` : "");
    badge.className = `badge ${current.state}`;
    badge.dataset.state = current.state;
    refreshEvents();
  }
}

async function refreshEvents() {
  if (!state.room) return;
  try {
    const events = await api(`/v1/rooms/${state.room.id}/events`);
    for (const e of events) lag.note(e);  // anchors the stream clock before the feed has said anything
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
  renderUrls(room);
  lag.reset();
  if (state.materialFor !== room.id) {  // not on a route switch: unsaved edits stay
    state.materialFor = room.id;
    loadRoomMaterial();
  }
  const video = $("#live-video");
  video.muted = false;
  if (state.route === "hls") player.play("hls", room.urls.hls);
  else player.play("flv", flvUrl(room));
  followFeed(room);
  setHash();
  refreshRooms();
  // One column (a phone, a narrow window): the room's view is below the list; bring it up.
  if (matchMedia("(max-width: 1100px)").matches) $("#room-detail").scrollIntoView({ block: "start" });
}

function closeView(note) {
  player.stop();
  if (state.feed) { state.feed.close(); state.feed = null; }
  state.room = null;
  state.materialFor = null;
  $("#room-detail").hidden = true;
  $("#room-placeholder").hidden = false;
  if (note) $("#room-placeholder").firstElementChild.textContent = note;
  setHash();
}

async function closeRoom(room) {
  if (!confirm(t("rooms.confirm_close", { name: roomName(room) }))) return;
  try {
    await api(`/v1/rooms/${room.id}`, { method: "DELETE" });
    if (state.room && state.room.id === room.id) closeView(t("rooms.closed_by_you"));
  } catch (err) { banner(plainError(err).title, "error"); }
  refreshRooms();
}

$("#room-close-view").addEventListener("click", () => closeView(t("rooms.placeholder")));
$("#room-route").addEventListener("change", (e) => { if (state.room) openRoom(state.room.id, e.target.value); });
$("#room-route").querySelector("option[value=hls]").disabled = !hlsSupported($("#live-video"));

// Browsers mute a page's media until the first interaction: a click or key anywhere gives the sound back.
function unmuteLive() {
  const v = $("#live-video");
  if (state.room && v.muted) { v.muted = false; v.play().catch(() => {}); }
  if (state.meter) state.meter.resume();
  if (state.playerState === "muted") $("#live-note").textContent = "";
}
for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, unmuteLive, { capture: true });

// ---------- play URLs: copy buttons, OBS's server + stream key, the audience page ----------

async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch (err) {
    // Not a secure context, or no permission: the old way, through a selected text field.
    const area = h("textarea", { class: "offscreen", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
  }
  button.textContent = ok ? t("urls.copied") : t("urls.copy_failed");
  button.classList.toggle("done", ok);
  setTimeout(() => { button.textContent = t("urls.copy"); button.classList.remove("done"); }, 1500);
  state.lastCopied = ok ? text : null;
}

function urlRow(label, value, { open = false, name = label } = {}) {
  const copy = h("button", { type: "button", class: "copy", dataset: { copy: name } }, t("urls.copy"));
  copy.addEventListener("click", () => copyText(value, copy));
  return h("div", { class: "url-row", dataset: { url: name } },
    h("span", { class: "url-label" }, label),
    h("code", { class: "url-value", title: value }, value),
    h("span", { class: "url-actions" }, copy,
      open ? h("a", { class: "button", href: value, target: "_blank", rel: "noopener" }, t("urls.open")) : ""));
}

/** OBS wants the RTMP URL as a server and a stream key: split at the last "/". */
function obsPair(rtmpUrl) {
  const cut = rtmpUrl.lastIndexOf("/");
  return { server: rtmpUrl.slice(0, cut), key: rtmpUrl.slice(cut + 1) };
}

function renderUrls(room) {
  const abs = (u) => new URL(u, location.href).href;
  const rows = [urlRow(t("urls.audience"), abs(`watch.html?key=${room.stream_key}`), { open: true, name: "audience" }),
    urlRow("flv", abs(flvUrl(room)), { name: "flv" })];
  for (const [k, v] of Object.entries(room.urls)) if (k !== "publish" && k !== "flv") rows.push(urlRow(k, v, { name: k }));
  const rtmp = room.urls.rtmp || room.urls.publish;
  const obs = rtmp ? obsPair(rtmp) : null;
  $("#room-urls").replaceChildren(...rows, obs ? h("div", { class: "obs" },
    h("div", { class: "obs-title" }, t("urls.obs")),
    urlRow(t("urls.obs_server"), obs.server, { name: "obs-server" }),
    urlRow(t("urls.obs_key"), obs.key, { name: "obs-key" }),
    h("p", { class: "muted hint" }, t("urls.obs_hint"))) : "");
}

// ---------- the room form: avatar picker, responder, system prompt, material ----------

function pickAvatar(id) {
  $("#room-avatar").value = id;
  $("#room-avatar-name").textContent = id;
  for (const b of document.querySelectorAll("#room-avatar-picker .pick")) {
    b.classList.toggle("selected", b.dataset.pick === id);
    b.setAttribute("aria-selected", b.dataset.pick === id ? "true" : "false");
  }
}

function renderPicker(ready) {
  const picker = $("#room-avatar-picker");
  const keep = $("#room-avatar").value;
  picker.replaceChildren(...(ready.length ? ready.map((a) => {
    const thumb = h("span", { class: "pick-thumb" });
    thumbnail(a.id, thumb);
    const enroll = enrollmentState(a);
    return h("button", { type: "button", class: "pick", role: "option", title: `${a.id} · ${enrollmentLabel(a)}`,
      dataset: { pick: a.id, enrollment: enroll }, onclick: () => pickAvatar(a.id) },
    thumb, h("span", { class: "pick-name" }, a.id), h("span", { class: `pick-enroll enroll ${enroll}` }, t(`avatars.pick_${enroll}`)));
  }) : [h("p", { class: "muted" }, t("room.avatar_none"))]));
  // The list is newest first: the operator's latest avatar is the default.
  pickAvatar(keep && ready.some((a) => a.id === keep) ? keep : (ready[0] ? ready[0].id : ""));
}

// The form's material: a chosen file is read and checked by the service at once (its errors said
// before the room exists), then shown in the editor; what the editor holds is the room's material.
const formMaterial = new MaterialEditor($("#room-material-editor"), { onChange: () => materialCount() });
state.formMaterial = formMaterial;

function formLanguage() {
  return $("#room-language").value || "zh";
}

function materialCount() {
  const c = formMaterial.counts();
  $("#room-material-count").textContent = $("#room-material-editor").hidden ? ""
    : t("mat.counts", { products: c.products, qa: c.qa });
}

$("#room-material").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  const box = $("#room-form-error");
  box.hidden = true;
  if (!file) return;
  $("#room-material-name").textContent = file.name;
  const form = new FormData();
  form.append("file", file);
  try {
    const checked = await upload("/v1/material/check", form);
    formMaterial.load(checked.material, formLanguage());
    $("#room-material-editor").hidden = false;
  } catch (err) {
    showError(box, err);
    e.target.value = "";
    $("#room-material-name").textContent = t("mat.file_refused", { name: file.name });
  }
  materialCount();
});
$("#room-material-edit").addEventListener("click", () => {
  const editor = $("#room-material-editor");
  if (editor.hidden && formMaterial.isEmpty()) formMaterial.load({ products: [{}], qa: [{}] }, formLanguage());
  editor.hidden = !editor.hidden;
  materialCount();
});

function resetFormMaterial() {
  $("#room-material").value = "";
  $("#room-material-name").textContent = t("room.material_none");
  formMaterial.load({ products: [], qa: [] }, formLanguage());
  $("#room-material-editor").hidden = true;
  materialCount();
}
$("#room-prompt").addEventListener("input", updateCounters);

$("#room-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("#room-form-error");
  box.hidden = true;
  const body = {};
  const prompt = $("#room-prompt").value.trim();
  if (prompt.length > state.limits.system_prompt_chars) {
    showMessage(box, tooLong(prompt.length, state.limits.system_prompt_chars));
    return;
  }
  if ($("#room-username").value.trim()) body.username = $("#room-username").value.trim();
  if ($("#room-avatar").value) body.avatar_id = $("#room-avatar").value;
  if ($("#room-language").value) body.language = $("#room-language").value;
  if ($("#room-ttl").value) body.ttl_s = Number($("#room-ttl").value);
  if ($("#room-responder").value) body.responder = $("#room-responder").value;
  if (prompt) body.system_prompt = prompt;
  try {
    const room = await api("/v1/rooms", { method: "POST", json: body });
    $("#room-username").value = "";
    if (!$("#room-material-editor").hidden && !formMaterial.isEmpty()) {
      try {
        await api(`/v1/rooms/${room.id}/material`, { method: "PUT", json: formMaterial.value() });
        resetFormMaterial();
      } catch (err) { showError(box, err); }  // the room is open; its material can be fixed in its view
    }
    await refreshRooms();
    openRoom(room.id);
  } catch (err) { showError(box, err); }
});

// ---------- the watched room's material ----------

const roomMaterial = new MaterialEditor($("#mat-editor"), { onChange: () => materialStatus(t("mat.unsaved"), "dirty") });
state.roomMaterial = roomMaterial;

function materialStatus(text, kind = "") {
  const el = $("#mat-status");
  el.textContent = text;
  el.dataset.state = kind;
}

function showMaterial(got) {
  roomMaterial.load(got.material, (state.room && state.room.language) || "zh");
  $("#mat-summary").textContent = t("room.material_saved", { products: got.products, qa: got.qa,
    source: t(got.source === "room" ? "room.material_room" : "room.material_sample") });
  $("#room-material-view").dataset.source = got.source;
}

async function loadRoomMaterial() {
  if (!state.room) return;
  $("#mat-error").hidden = true;
  materialStatus("");
  try {
    showMaterial(await api(`/v1/rooms/${state.room.id}/material`));
  } catch (err) { showError($("#mat-error"), err); }
}

async function saveMaterial(send) {
  if (!state.room) return;
  $("#mat-error").hidden = true;
  try {
    showMaterial(await send(state.room.id));
    materialStatus(t("mat.saved"), "saved");
  } catch (err) {
    showError($("#mat-error"), err);
    materialStatus(t("mat.not_saved"), "error");
  }
}

$("#mat-save").addEventListener("click", () => saveMaterial((id) =>
  api(`/v1/rooms/${id}/material`, { method: "PUT", json: roomMaterial.value() })));
$("#mat-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  saveMaterial((id) => upload(`/v1/rooms/${id}/material`, form, null, "PUT"));
});
$("#mat-sample").addEventListener("click", () => saveMaterial(async (id) => {
  await api(`/v1/rooms/${id}/material`, { method: "DELETE" });
  return api(`/v1/rooms/${id}/material`);
}));

// ---------- speaking and asking ----------

function sayLimit() {
  return $("#say-converse").checked ? state.limits.message_chars : state.limits.text_chars;
}

function tooLong(n, max) {
  return t("say.too_long", { n, max, over: n - max });
}

function counter(el, n, max) {
  el.textContent = t("say.count", { n, max });
  el.classList.toggle("over", n > max);
}

function updateCounters() {
  counter($("#say-count"), $("#say-text").value.trim().length, sayLimit());
  counter($("#room-prompt-count"), $("#room-prompt").value.trim().length, state.limits.system_prompt_chars);
  counter($("#render-count"), $("#render-text").value.trim().length, state.limits.text_chars);
  const ask = $("#say-converse").checked;
  $("#say-text").placeholder = t(ask ? "say.placeholder_ask" : "say.placeholder");
  $("#say-button").textContent = t(ask ? "say.ask_button" : "say.speak");
}
for (const id of ["#say-text", "#render-text"]) $(id).addEventListener("input", updateCounters);
$("#say-converse").addEventListener("change", updateCounters);

async function say(body) {
  const box = $("#say-error");
  box.hidden = true;
  if (!state.room) return false;
  // "Ask": a message the room answers (it first stops what it is saying); otherwise it says the text.
  const path = $("#say-converse").checked ? "messages" : "say";
  try {
    await api(`/v1/rooms/${state.room.id}/${path}`, { method: "POST", json: body });
    refreshRooms();
    return true;
  } catch (err) { showError(box, err); return false; }
}

// ---------- conversation: the room's WebSocket feed ----------

function followFeed(room) {
  if (state.feed) state.feed.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey() ? `?key=${encodeURIComponent(apiKey())}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/rooms/${room.id}/ws${key}`);
  state.feed = ws;
  state.retracted = new Set();
  let pending = null;
  ws.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    lag.note(e, Date.now());
    if (e.event === "mouth") return;  // per-frame values: for front-ends animating their own character
    // A voice turn taken back (the speaker went on after a pause): its message and reply go at once,
    // and stay gone whatever a transcript read before this event still says.
    if (e.event === "message_retracted" && e.message) {
      state.retracted.add(e.message);
      dropRetracted();
    }
    // Text arrives token by token: redraw the transcript at most five times a second.
    if (!pending) pending = setTimeout(() => { pending = null; refreshConversation(); }, 200);
  };
  refreshConversation();
}

function statusLabel(status) {
  const key = `status.${status}`;
  const text = t(key);
  return text === key ? status : text;
}

function isRetracted(m) {
  const gone = state.retracted || new Set();
  return gone.has(m.id) || (m.reply_to && gone.has(m.reply_to));
}

function dropRetracted() {
  for (const li of [...$("#conversation").children]) {
    if (isRetracted({ id: li.dataset.id, reply_to: li.dataset.replyTo })) li.remove();
  }
}

let conversationReads = 0;  // a transcript read that answers after a newer one is not drawn

async function refreshConversation() {
  if (!state.room) return;
  const read = ++conversationReads;
  try {
    const messages = (await api(`/v1/rooms/${state.room.id}/messages`)).filter((m) => !isRetracted(m));
    if (read !== conversationReads) return;
    $("#conversation").replaceChildren(...messages.map((m) => h("li", { class: `msg ${m.role} ${m.status}`,
      dataset: { status: m.status, id: m.id, ...(m.reply_to ? { replyTo: m.reply_to } : {}) } },
      h("span", { class: "who" }, m.role === "user" ? t("conv.user") : (m.responder || t("conv.room"))),
      h("span", { class: "text" }, m.role === "assistant" && m.status === "generating" ? (m.generated || "…") : (m.text || m.generated || "")),
      h("span", { class: "muted status" }, ` ${statusLabel(m.status)}${m.fallback ? ` (${t("conv.fallback", { reason: m.fallback.reason })})` : ""}`))));
    const list = $("#conversation");
    list.scrollTop = list.scrollHeight;
  } catch (err) { /* the room list shows a closed room */ }
}

$("#say-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("#say-text").value.trim();
  // Limits are said before anything is sent: empty text and text over the limit are never cut silently.
  if (!text) { showMessage($("#say-error"), t("say.empty")); return; }
  if (text.length > sayLimit()) { showMessage($("#say-error"), tooLong(text.length, sayLimit())); return; }
  $("#say-button").disabled = true;
  const sent = await say({ text });
  $("#say-button").disabled = false;
  if (sent) { $("#say-text").value = ""; updateCounters(); }
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
  $("#live-stats").textContent = `${state.route.toUpperCase()} · ${t("view.buffer", { s: player.bufferAhead().toFixed(2) })}` +
    (v.videoWidth ? ` · ${v.videoWidth}×${v.videoHeight}` : "");
  showLag();
}, 100);

/** "behind the room" now, and the last speech start's own figure (what the viewer actually lags). */
function showLag() {
  lag.tick();
  const box = $("#live-latency");
  const now = lag.lag();
  const last = lag.heard[lag.heard.length - 1];
  box.dataset.lag = now === null ? "" : now.toFixed(3);
  box.classList.toggle("slow", now !== null && now > 2);
  box.textContent = (now === null ? t(state.route === "hls" ? "view.lag_hls" : "view.lag_unknown")
    : t("view.lag", { s: now.toFixed(2) })) + (last ? ` · ${t("view.lag_speech", { s: last.lag_s.toFixed(2) })}` : "");
  box.title = t("view.lag_title");
}

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
  // Newest first (the API's order): the operator's latest avatar leads the pickers.
  const ready = state.avatars.filter((a) => a.status === "ready");
  const ids = ready.map((a) => `${a.id}:${enrollmentState(a)}`).join(",");
  if (ids !== state.readyIds) {
    state.readyIds = ids;
    for (const sel of [$("#room-avatar"), $("#render-avatar")]) {
      const keep = sel.value;
      sel.replaceChildren(...ready.map((a) => h("option", { value: a.id }, a.id)));
      if (keep && ready.some((a) => a.id === keep)) sel.value = keep;
    }
    renderPicker(ready);
  }
  if (state.tab !== "avatars") return;
  $("#avatars-count").textContent = `(${state.avatars.length})`;
  $("#avatar-gallery").replaceChildren(...state.avatars.map((a) => {
    const m = a.manifest || {};
    const thumb = h("div", { class: "thumb", role: "img", "aria-label": a.id });
    if (a.status === "ready") thumbnail(a.id, thumb);
    const enrolled = enrollmentLabel(a);
    return h("div", { class: "avatar-card", dataset: { avatar: a.id, enrollment: enrollmentState(a) } }, thumb,
      h("div", { class: "meta" },
        h("b", { title: a.id }, a.id),
        h("div", { class: "row" }, h("span", { class: `badge ${a.status}` }, a.status),
          h("button", { class: "danger", onclick: () => deleteAvatar(a.id) }, t("avatars.delete"))),
        m.width ? h("span", { class: "muted" }, t("avatars.frames", { kind: m.kind || "", w: m.width, h: m.height, frames: m.frames, engine: enrolled })) : "",
        a.status === "ready" ? h("span", { class: `enroll ${enrollmentState(a)}`, title: t("avatars.enroll_title") }, enrolled) : "",
        a.error ? h("span", { class: "err" }, plainJobError(a.error).title) : ""));
  }));
}

/** current | outdated | reenrolling | none: whether the avatar speaks with its own learned mouth
 *  now (GET /v1/avatars `enrollment_state`, lipsync/upkeep.py); an older bank speaks with warp. */
function enrollmentState(a) {
  return (a.enrollment_state && a.enrollment_state.state) || (a.manifest && a.manifest.enrollment ? "current" : "none");
}

function enrollmentLabel(a) {
  return t(`avatars.enroll_${enrollmentState(a)}`);
}

async function deleteAvatar(id) {
  if (!confirm(t("avatars.confirm_delete", { id }))) return;
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
  $("#avatar-file-name").textContent = e.target.files[0] ? e.target.files[0].name : t("avatars.no_file");
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
  progress("avatar", 0, t("progress.uploading"));
  try {
    const accepted = await upload("/v1/avatars", form, (f) => progress("avatar", 0.3 * f, t("progress.uploading")));
    progress("avatar", 0.3, t("progress.preparing"));
    const job = await waitJob(accepted.job_id, (j) => {
      const label = j.status === "queued" ? t("progress.waiting_worker") : t("progress.preparing");
      progress("avatar", 0.3 + 0.7 * (j.progress || 0), label);
    });
    if (job.status === "finished") {
      progress("avatar", 1, t("progress.ready", { id: accepted.avatar_id }), "done");
      $("#avatar-form").reset();
      $("#avatar-file-name").textContent = t("avatars.no_file");
    } else {
      progress("avatar", 1, t("progress.failed"), "failed");
      showError(box, job.error, true);
    }
  } catch (err) {
    progress("avatar", 1, t("progress.failed"), "failed");
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
  if (!file && !text) { showError(box, { code: "missing_parameter", message: t("renders.need_input") }); return; }
  if (!file && text.length > state.limits.text_chars) { showMessage(box, tooLong(text.length, state.limits.text_chars)); return; }
  progress("render", 0, t("progress.submitting"));
  try {
    let accepted;
    if (file) {
      const form = new FormData();
      form.append("avatar_id", avatar);
      form.append("audio", file);
      if (engine) form.append("engine", engine);
      accepted = await upload("/v1/lipsync/upload", form, (f) => progress("render", 0.1 * f, t("progress.uploading")));
    } else {
      accepted = await api("/v1/lipsync", { method: "POST", json: { avatar_id: avatar, text, engine } });
    }
    const job = await waitJob(accepted.job_id, (j) =>
      progress("render", 0.1 + 0.9 * (j.progress || 0), j.status === "started" ? t("progress.rendering") : t("progress.waiting")));
    if (job.status !== "finished") {
      progress("render", 1, t("progress.failed"), "failed");
      showError(box, job.error, true);
      return;
    }
    progress("render", 1, t("progress.done"), "done");
    const item = { id: job.id, avatar, label: text ? text.slice(0, 40) : file.name, result: job.result };
    state.renders.unshift(item);
    $("#render-text").value = "";
    updateCounters();
    listRenders();
    showRender(item);
  } catch (err) {
    progress("render", 1, t("progress.failed"), "failed");
    showError(box, err);
  }
});

function listRenders() {
  $("#render-list").replaceChildren(...state.renders.map((r) => h("li", {},
    h("span", {}, h("b", {}, r.avatar), " · ", r.label),
    h("button", { onclick: () => showRender(r) }, t("renders.show")))));
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

function seconds(v) {
  return v < 10 ? `${v.toFixed(2)} s` : v < 120 ? `${v.toFixed(1)} s` : `${Math.round(v / 60)} min`;
}

/** How long a job ran (or has been running), from its start. */
function jobDuration(j) {
  if (!j.started_at) return "–";
  const end = j.ended_at ? Date.parse(j.ended_at) : Date.now();
  return seconds(Math.max(0, (end - Date.parse(j.started_at)) / 1000));
}

function jobSubject(j) {
  const s = j.subject || {};
  const room = s.room_id ? state.rooms.find((r) => r.id === s.room_id) : null;
  return [s.room_id ? `${t("fleet.room")} ${room ? roomName(room) : s.room_id.slice(0, 8)}` : "",
    s.avatar_id ? `${t("fleet.avatar")} ${s.avatar_id}` : ""].filter(Boolean).join(" · ") || "–";
}

async function refreshFleet() {
  let fleet;
  try {
    // The rooms too: a job's room is shown by its name.
    const [f, rooms] = await Promise.all([api(`/v1/fleet?recent=25&window_s=${$("#fleet-window").value}`),
      api("/v1/rooms").catch(() => null)]);
    fleet = f;
    if (rooms) state.rooms = rooms;
  } catch (err) { return; }
  $("#queues-table tbody").replaceChildren(...Object.entries(fleet.queues).map(([kind, q]) => h("tr", {},
    h("td", {}, kind), h("td", {}, String(q.queued)), h("td", {}, String(q.started)),
    h("td", { class: q.failed_window ? "err" : "", title: t("fleet.failed_total", { n: q.failed }) },
      String(q.failed_window ?? q.failed)),
    h("td", {}, h("span", { class: `badge ${q.workers ? "ready" : "failed"}` }, String(q.workers))))));
  const streams = Object.entries(fleet.stream_workers);
  $("#streams-table tbody").replaceChildren(...(streams.length ? streams.map(([name, n]) => h("tr", {},
    h("td", { class: "mono" }, name), h("td", {}, String(n))))
    : [h("tr", {}, h("td", { colspan: 2, class: "empty" }, t("fleet.no_stream")))]));
  $("#rooms-open").textContent = t("fleet.rooms_open", { n: fleet.rooms_open });
  $("#procs-table tbody").replaceChildren(...(fleet.processes || []).map((p) => h("tr", { dataset: { kind: p.kind } },
    h("td", { class: "mono proc-name", title: p.name }, p.name), h("td", {}, p.kind),
    h("td", { class: "mono opt" }, p.pid ?? "–"),
    h("td", { class: "num" }, p.cpu_percent === null ? "–" : `${p.cpu_percent.toFixed(1)} %`),
    h("td", { class: "num" }, p.rss_mb === null ? "–" : `${Math.round(p.rss_mb)} MB`))));
  $("#jobs-table tbody").replaceChildren(...fleet.recent_jobs.map((j) => h("tr", {},
    h("td", {}, clock(j.created_at)), h("td", {}, j.kind),
    h("td", {}, h("span", { class: `badge ${j.status}` }, j.status)),
    h("td", { class: "num duration" }, jobDuration(j)),
    h("td", { class: "subject" }, jobSubject(j)),
    h("td", { class: "mono opt", title: j.id }, j.id.slice(0, 8)),
    h("td", { class: "err" }, j.error ? `${plainJobError(j.error).title} ${j.error.message || ""}` : ""))));
}
$("#fleet-window").addEventListener("change", refreshFleet);

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

window.addEventListener("mtl:lang", () => {
  state.readyIds = null;  // redraw the pickers' empty notes too
  updateCounters();
  if (state.room) renderUrls(state.room);
  // The editors' labels too, unless they hold edits not saved yet.
  if ($("#room-material-editor").hidden) formMaterial.render();
  if ($("#mat-status").dataset.state !== "dirty") loadRoomMaterial();
  refreshAll();
  refreshConversation();
});

syncKeyForm();
updateCounters();
loadLimits();
{
  const want = parseHash();
  state.wantedRoom = want.roomId;  // a reload returns to the room being watched
  showTab(want.tab);
}
state.openRoom = openRoom;
state.refreshRooms = refreshRooms;
