// Talking to a room from the browser's microphone: WS /v1/rooms/{id}/audio.
// One module for both pages: on the console it adds its controls to the open room's say form (the room
// is window.mtlConsole.room); on the audience page (watch.html?key=<stream_key>) it fills #mic-panel and
// talks to that room. Audio: getUserMedia (echo cancellation and noise suppression on) -> an AudioContext
// at 16 kHz -> an AudioWorklet -> 40 ms frames of PCM s16le over the socket while the button is held
// (hold-to-talk) or while hands-free is on. The server's VAD cuts the utterances. The socket has the
// room feed's access rules: with API keys on, a page without the key is refused at the handshake, and
// the audience page then asks for one (kept for this browser session, as the console keeps it).

import { apiKey, setApiKey } from "./api.js";
import { applyI18n, t } from "./i18n.js";

const RATE = 16000;
const FRAME = 640; // 40 ms
const WORKLET = `
class Tap extends AudioWorkletProcessor {
  process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0)); return true; }
}
registerProcessor("mtl-tap", Tap);`;

const mic = { ws: null, roomId: null, ctx: null, talking: false, handsFree: false, level: 0, peak: 0, buf: [],
              events: [], partial: "", error: "", opened: false, page: null };
window.mtlMic = mic;

function el(tag, attrs = {}, text = "") {
  const node = Object.assign(document.createElement(tag), attrs);
  if (text) node.textContent = text;
  return node;
}

const ui = {
  hold: el("button", { type: "button", id: "mic-hold" }),
  free: el("input", { type: "checkbox", id: "mic-hands-free" }),
  freeText: el("span"),
  meter: el("span", { id: "mic-meter", role: "meter", style: "display:inline-block;width:60px;height:8px;background:#ddd;vertical-align:middle" }),
  bar: el("span", { style: "display:block;height:100%;width:0;background:#2a8" }),
  line: el("div", { id: "mic-transcript", className: "muted", style: "min-height:1.2em;margin-top:4px" }),
  keyForm: el("form", { id: "mic-key-form", hidden: true }),
};
ui.meter.append(ui.bar);
let shown = { key: "", vars: {}, error: false, text: null };

// ---- the two pages ----

/** The room this page talks to: {id} on the console (the open room), the stream key on the audience page. */
function currentRoom() {
  if (mic.page === "watch") {
    const key = new URLSearchParams(location.search).get("key");
    return key ? { id: key } : null;
  }
  return window.mtlConsole && window.mtlConsole.room;
}

function label() {
  const node = el("label", { className: "check" });
  node.dataset.i18nTitle = "mic.hands_free_title";
  node.append(ui.free, " ", ui.freeText);
  return node;
}

function mount() {
  if (document.getElementById("mic-hold")) return;
  const actions = document.querySelector("#say-form .say-actions");
  const panel = document.getElementById("mic-panel");
  if (actions) {
    mic.page = "console";
    actions.append(ui.hold, label(), ui.meter);
    actions.parentElement.after(ui.line);
  } else if (panel) {
    mic.page = "watch";
    const row = el("div", { className: "mic-row" });
    row.append(ui.hold, label(), ui.meter);
    const keyInput = el("input", { type: "password", id: "mic-key", autocomplete: "off", spellcheck: false });
    keyInput.dataset.i18nPlaceholder = "mic.key_placeholder";
    const keyButton = el("button", { type: "submit" });
    keyButton.dataset.i18n = "mic.key_use";
    ui.keyForm.append(keyInput, keyButton);
    ui.keyForm.addEventListener("submit", (e) => {
      e.preventDefault();
      setApiKey(keyInput.value.trim());
      ui.keyForm.hidden = true;
      show("mic.key_saved");
    });
    panel.append(row, ui.line, ui.keyForm);
  } else {
    return;
  }
  ui.hold.dataset.i18n = "mic.hold";
  ui.hold.dataset.i18nTitle = "mic.hold_title";
  ui.freeText.dataset.i18n = "mic.hands_free";
  ui.meter.dataset.i18nAria = "mic.level";
  applyI18n(ui.hold.parentElement.parentElement);
  applyI18n(ui.keyForm);
}

// ---- what the line under the controls says (kept as a key, so a language switch redraws it) ----

function show(key, vars = {}, error = false) {
  shown = { key, vars, error, text: null };
  draw();
}

function showText(text) {
  shown = { key: "", vars: {}, error: false, text };
  draw();
}

function draw() {
  ui.line.textContent = shown.text !== null ? shown.text : shown.key ? t(shown.key, shown.vars) : "";
  ui.line.style.color = shown.error ? "#c33" : "";
}

window.addEventListener("mtl:lang", () => { draw(); applyI18n(ui.keyForm); });

// ---- audio ----

async function ensureAudio() {
  if (mic.ctx) return;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } });
  mic.ctx = new AudioContext({ sampleRate: RATE });
  await mic.ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" })));
  const tap = new AudioWorkletNode(mic.ctx, "mtl-tap");
  tap.port.onmessage = (e) => onSamples(e.data);
  mic.ctx.createMediaStreamSource(stream).connect(tap);
}

function onSamples(block) {
  let sum = 0;
  for (const v of block) sum += v * v;
  mic.level = Math.max(Math.sqrt(sum / block.length), mic.level * 0.9);
  mic.peak = Math.max(mic.peak, mic.level);  // the loudest the meter showed (tests read it)
  ui.bar.style.width = `${Math.min(100, mic.level * 400)}%`;
  if (!mic.talking || !mic.ws || mic.ws.readyState !== WebSocket.OPEN) { mic.buf = []; return; }
  for (const v of block) mic.buf.push(v);
  while (mic.buf.length >= FRAME) {
    const frame = new Int16Array(FRAME);
    for (let i = 0; i < FRAME; i++) frame[i] = Math.max(-1, Math.min(1, mic.buf[i])) * 32767;
    mic.buf = mic.buf.slice(FRAME);
    mic.ws.send(frame.buffer);
  }
}

// ---- the socket ----

function connect(room) {
  if (mic.ws && mic.roomId === room.id && mic.ws.readyState <= WebSocket.OPEN) return mic.ws;
  if (mic.ws) mic.ws.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey() ? `?key=${encodeURIComponent(apiKey())}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/rooms/${encodeURIComponent(room.id)}/audio${key}`);
  mic.ws = ws;
  mic.roomId = room.id;
  mic.opened = false;
  ws.onmessage = (msg) => onEvent(JSON.parse(msg.data));
  ws.onclose = (e) => {
    if (mic.ws === ws) mic.ws = null;
    const refused = !mic.opened;  // closed before the server said `listening`: the handshake was refused
    mic.handsFree = ui.free.checked = false;
    stopTalking(false);
    if (refused) explainRefusal(room);
    else if (e.code !== 1000 && e.code !== 1005 && !shown.error) {
      show("mic.closed", { code: e.code, reason: e.reason || "" }, true);  // unless an error event said why
    }
  };
  return ws;
}

/** Browsers do not tell why a WebSocket handshake failed: the room's own GET says (401 key, 404 room). */
async function explainRefusal(room) {
  let status = 0;
  try {
    const headers = apiKey() ? { "X-API-Key": apiKey() } : {};
    status = (await fetch(`/v1/rooms/${encodeURIComponent(room.id)}`, { headers, cache: "no-store" })).status;
  } catch (err) { /* the service is away */ }
  mic.error = status === 401 ? "key_needed" : status === 404 ? "unknown_room" : "refused";
  if ((status === 401 || status === 404) && mic.page === "watch") ui.keyForm.hidden = false;  // another key may do
  show(`mic.refused.${mic.error}`, {}, true);
}

function onEvent(e) {
  if (e.speaker !== "user") return; // the room's own feed events: the page follows them already
  mic.events.push(e);
  mic.opened = true;  // accepted: a close from now on says why itself (an error event, a close code)
  if (e.event === "speech_start") showText("…");
  else if (e.event === "partial") showText(`${e.text} …`);
  else if (e.event === "final") { if (e.text) show("mic.you", { text: e.text }); else show("mic.no_speech"); }
  else if (e.event === "error") {
    mic.error = e.code;
    const known = ["speaker_busy", "too_fast", "idle_timeout", "bad_frame"].includes(e.code);
    if (known) show(`mic.error.${e.code}`, {}, true); else showText(e.message);
  }
}

async function startTalking() {
  const room = currentRoom();
  if (!room) return;
  try {
    await ensureAudio();
    await mic.ctx.resume();
    connect(room);
    mic.talking = true;
    ui.hold.classList.add("primary");
  } catch (err) {
    show("mic.unavailable", { error: err.message || err }, true);
  }
}

function stopTalking(sendEnd = true) {
  if (mic.talking && sendEnd && mic.ws && mic.ws.readyState === WebSocket.OPEN) {
    mic.ws.send(JSON.stringify({ type: "end" }));
  }
  mic.talking = mic.handsFree;
  if (!mic.talking) ui.hold.classList.remove("primary");
}

ui.hold.addEventListener("pointerdown", (e) => { e.preventDefault(); startTalking(); });
for (const ev of ["pointerup", "pointerleave"]) {
  ui.hold.addEventListener(ev, () => { if (!mic.handsFree && mic.talking) stopTalking(); });
}
ui.free.addEventListener("change", () => {
  mic.handsFree = ui.free.checked;
  if (mic.handsFree) startTalking(); else stopTalking();
});

mount();
