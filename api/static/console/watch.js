// The audience page of one room: /console/watch.html?key=<stream_key>[&routes=flv,hls][&hls=<url>][&meter=1].
// Browsers start a page's media muted until the viewer interacts with it: the first tap or key anywhere
// unmutes, and a tap-to-unmute overlay stays until the picture plays with its sound. Volume, fullscreen,
// the room's state (live, speaking, offline: GET /live/<key>/state) and reconnection (LivePlayer retries,
// backing off while the room is away). Public like the room's play URLs: HTTP-FLV needs no API key.
// window.watch[route] = {video, meter, player} (the latency benchmark reads the meters; meter=1 makes
// them at load, otherwise the first tap does); window.audience is the page's own state.

import { AudioMeter, LivePlayer } from "./player.js";
import { applyI18n, bindLanguageSelect, t } from "./i18n.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const key = params.get("key") || "";
const routes = (params.get("routes") || "flv").split(",").filter((r) => r === "flv" || r === "hls");
const VOLUME = "mtl.volume";
// Icons drawn inline (no icon font or emoji font needed on the viewer's device).
const SPEAKER = '<path d="M3 9v6h4l5 5V4L7 9H3z"/>';
const ICONS = {
  sound: `<svg viewBox="0 0 24 24" aria-hidden="true">${SPEAKER}<path d="M16.5 12a4.5 4.5 0 0 0-2.5-4v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1a7 7 0 0 1 0 13.4v2.1a9 9 0 0 0 0-17.6z"/></svg>`,
  muted: `<svg viewBox="0 0 24 24" aria-hidden="true">${SPEAKER}<path d="M15.5 8.5l6 6m0-6l-6 6" stroke="currentColor" stroke-width="2" fill="none"/></svg>`,
  fullscreen: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h6v2H6v4H4zm10 0h6v6h-2V6h-4zM4 14h2v4h4v2H4zm14 0h2v6h-6v-2h4z"/></svg>',
};
window.watch = {};
const audience = { state: "connecting", unmuted: false, userMuted: false, playerState: "connecting" };
window.audience = audience;

applyI18n();
bindLanguageSelect($("#lang"));
$("#unmute .icon").innerHTML = ICONS.muted;
$("#fullscreen").innerHTML = ICONS.fullscreen;
window.addEventListener("mtl:lang", () => showState());

function players() { return Object.values(window.watch); }

function startPlayers() {
  for (const route of routes) {
    const url = route === "flv" ? `/live/${key}.flv` : params.get("hls");
    if (!url) continue;
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.playsInline = true;
    video.autoplay = true;
    video.volume = savedVolume();
    figure.append(video);
    if (routes.length > 1) {
      const caption = document.createElement("figcaption");
      caption.textContent = route.toUpperCase();
      figure.append(caption);
    }
    $("#players").append(figure);
    const meter = params.get("meter") === "1" ? new AudioMeter(video) : null;
    if (meter) meter.resume();
    const player = new LivePlayer(video, { onState: (s) => { audience.playerState = s; showState(); } });
    player.play(route, url);
    window.watch[route] = { video, meter, player };
  }
}

function savedVolume() {
  const v = Number(localStorage.getItem(VOLUME));
  return Number.isFinite(v) && localStorage.getItem(VOLUME) !== null ? Math.min(1, Math.max(0, v)) : 1;
}

/** Sound on: called from a user gesture, so the browser lets media and WebAudio play with sound. */
function unmute() {
  audience.userMuted = false;
  for (const p of players()) {
    p.video.muted = false;
    if (p.video.volume === 0) p.video.volume = 1;
    p.video.play().catch(() => {});
    if (!p.meter) p.meter = new AudioMeter(p.video);
    p.meter.resume();
  }
  audience.unmuted = true;
  syncControls();
}

function soundPlaying() {
  const list = players();
  return list.length > 0 && list.every((p) => !p.video.muted && !p.video.paused && p.video.readyState >= 2
    && (!p.meter || p.meter.ctx.state === "running"));
}

function syncControls() {
  const muted = players().some((p) => p.video.muted) || audience.userMuted;
  const icon = muted ? "muted" : "sound";
  if ($("#mute").dataset.icon !== icon) { $("#mute").innerHTML = ICONS[icon]; $("#mute").dataset.icon = icon; }
  $("#volume").value = String(players()[0] ? players()[0].video.volume : savedVolume());
  // The overlay stays until the sound plays, unless the viewer chose silence with the mute button.
  $("#unmute").hidden = audience.userMuted || soundPlaying();
}

function showState() {
  const away = audience.state === "offline";
  const reconnecting = !away && ["reconnecting", "error"].includes(audience.playerState);
  const shown = away ? "offline" : reconnecting ? "reconnecting" : audience.state;
  $("#status").className = `status ${shown}`;
  $("#state-text").textContent = t(`watch.state.${shown}`);
  $("#status").dataset.state = shown;
}

async function pollState() {
  try {
    const r = await fetch(`/live/${key}/state`, { cache: "no-store" });
    audience.state = r.ok ? (await r.json()).state : "offline";
  } catch (err) {
    audience.state = "offline";  // the server itself is away: the player reconnects when it is back
  }
  showState();
}

function bindControls() {
  // The first tap, click or key anywhere turns the sound on (capture: before any other handler).
  for (const type of ["pointerdown", "click", "keydown", "touchend"]) {
    document.addEventListener(type, (e) => {
      if (e.target && e.target.closest && e.target.closest("#mute, #lang, #volume")) return;
      if (!audience.unmuted || (!audience.userMuted && !soundPlaying())) unmute();
    }, { capture: true });
  }
  $("#mute").addEventListener("click", () => {
    const mute = !(players().some((p) => p.video.muted) || audience.userMuted);
    if (mute) {
      audience.userMuted = true;
      for (const p of players()) p.video.muted = true;
      syncControls();
    } else unmute();
  });
  $("#volume").addEventListener("input", (e) => {
    const v = Number(e.target.value);
    localStorage.setItem(VOLUME, String(v));
    for (const p of players()) p.video.volume = v;
    if (v > 0 && !audience.unmuted) unmute();
  });
  $("#fullscreen").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else ($("#stage").requestFullscreen ? $("#stage").requestFullscreen() : Promise.reject()).catch(() => {});
  });
}

if (!/^zbj-[0-9a-f]{32}$/.test(key)) {
  const box = $("#error");
  box.textContent = t("watch.no_room");
  box.hidden = false;
} else {
  bindControls();
  startPlayers();
  pollState();
  setInterval(pollState, 2000);
  setInterval(syncControls, 250);
  syncControls();
}
