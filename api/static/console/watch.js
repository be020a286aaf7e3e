// A bare viewer for one room: /console/watch.html?key=<stream_key>[&routes=flv,hls][&meter=1].
// The room's stream plays once per route given, side by side (to compare them); with meter=1 each
// player also feeds a WebAudio level meter (window.watch[route].meter), as the latency benchmark
// reads it. Public like the room's play URLs: HTTP-FLV needs no API key; HLS needs its URL (hls=).

import { AudioMeter, LivePlayer } from "./player.js";

const params = new URLSearchParams(location.search);
const key = params.get("key") || "";
const routes = (params.get("routes") || "flv").split(",").filter((r) => r === "flv" || r === "hls");
window.watch = {};

if (!/^zbj-[0-9a-f]{32}$/.test(key)) {
  const box = document.getElementById("error");
  box.textContent = "No room: open this page as watch.html?key=<stream key>.";
  box.hidden = false;
} else {
  for (const route of routes) {
    const url = route === "flv" ? `/live/${key}.flv` : params.get("hls");
    if (!url) continue;
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.playsInline = true;
    video.autoplay = true;
    const caption = document.createElement("figcaption");
    caption.textContent = route === "flv" ? "HTTP-FLV" : "HLS";
    figure.append(video, caption);
    document.getElementById("players").append(figure);
    const meter = params.get("meter") === "1" ? new AudioMeter(video) : null;
    if (meter) meter.resume();
    const player = new LivePlayer(video, { onState: (s, text) => { caption.textContent = `${route.toUpperCase()} ${text}`; } });
    player.play(route, url);
    window.watch[route] = { video, meter, player };
  }
}
