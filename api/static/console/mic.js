// Talking to the open room from the browser's microphone: WS /v1/rooms/{id}/audio.
// Kept apart from console.js: it adds its own controls to the room's say form and reads the open room
// from window.mtlConsole. Audio: getUserMedia (echo cancellation and noise suppression on) -> an
// AudioContext at 16 kHz -> an AudioWorklet -> 40 ms frames of PCM s16le over the socket while the
// button is held (hold-to-talk) or while hands-free is on. The server's VAD cuts the utterances.

import { apiKey } from "./api.js";

const RATE = 16000;
const FRAME = 640; // 40 ms
const WORKLET = `
class Tap extends AudioWorkletProcessor {
  process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0)); return true; }
}
registerProcessor("mtl-tap", Tap);`;

const mic = { ws: null, roomId: null, ctx: null, talking: false, handsFree: false, level: 0, buf: [],
              events: [], partial: "", error: "" };
window.mtlMic = mic;

function el(tag, attrs = {}, text = "") {
  const node = Object.assign(document.createElement(tag), attrs);
  if (text) node.textContent = text;
  return node;
}

const ui = {
  hold: el("button", { type: "button", id: "mic-hold", title: "Hold to talk to the room; release to end" }, "Hold to talk"),
  free: el("input", { type: "checkbox", id: "mic-hands-free" }),
  meter: el("span", { id: "mic-meter", style: "display:inline-block;width:60px;height:8px;background:#ddd;vertical-align:middle" }),
  bar: el("span", { style: "display:block;height:100%;width:0;background:#2a8" }),
  line: el("div", { id: "mic-transcript", className: "muted", style: "min-height:1.2em;margin-top:4px" }),
};
ui.meter.append(ui.bar);

function mount() {
  const actions = document.querySelector("#say-form .say-actions");
  if (!actions || document.getElementById("mic-hold")) return;
  const label = el("label", { className: "check", title: "Stream the microphone; the room hears each sentence" });
  label.append(ui.free, " Hands-free");
  actions.append(ui.hold, label, ui.meter);
  actions.parentElement.after(ui.line);
}

function show(text, error = false) {
  ui.line.textContent = text;
  ui.line.style.color = error ? "#c33" : "";
}

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

function connect(room) {
  if (mic.ws && mic.roomId === room.id && mic.ws.readyState <= WebSocket.OPEN) return mic.ws;
  if (mic.ws) mic.ws.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey() ? `?key=${encodeURIComponent(apiKey())}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/rooms/${room.id}/audio${key}`);
  mic.ws = ws;
  mic.roomId = room.id;
  ws.onmessage = (msg) => onEvent(JSON.parse(msg.data));
  ws.onclose = (e) => {
    if (mic.ws === ws) mic.ws = null;
    if (e.code !== 1000 && e.code !== 1005) show(`microphone closed (${e.code}) ${e.reason || ""}`, true);
    stopTalking(false);
  };
  return ws;
}

function onEvent(e) {
  if (e.speaker !== "user") return; // the room's own feed events: console.js follows them already
  mic.events.push(e);
  if (e.event === "speech_start") show("…");
  else if (e.event === "partial") show(`${e.text} …`);
  else if (e.event === "final") show(e.text ? `You: ${e.text}` : "(no speech recognised)");
  else if (e.event === "error") { mic.error = e.code; show(e.message, true); }
}

async function startTalking() {
  const room = window.mtlConsole && window.mtlConsole.room;
  if (!room) return;
  try {
    await ensureAudio();
    await mic.ctx.resume();
    connect(room);
    mic.talking = true;
    ui.hold.classList.add("primary");
  } catch (err) {
    show(`microphone unavailable: ${err.message || err}`, true);
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
