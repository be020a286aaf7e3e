"""The console's latency readout against independent measurements of the same speech.

    python -m bench.console_latency [--url http://127.0.0.1:8181] [--utterances 8]

The console (/console, room view, HTTP-FLV) shows how far its player is behind the room: the stream
clock of the room's events (`speech_start` at `stream_ts`, sent by the publisher at its wall time
`t`) mapped onto the player's `currentTime` through the relay's `onMtlClock` tag (core/flvrelay.py,
api/static/console/player.js `StreamLag`). For every utterance this bench reads that figure and,
for the same `speech_start`, two measurements that use no part of the mapping:

* `meter`: the first loud sample of the page's own WebAudio meter (what the page plays) minus `t`;
* `ffmpeg_flv`: the first loud 20 ms of an ffmpeg viewer pulling the same `/live/<key>.flv` minus `t`
  (a player with almost no buffer: it shows the relay's share, without the browser's).

The speech is the service's TTS with its leading silence cut, so its first loud sample is its start.
Without `--url` it starts its own fleet (bench.conversation_latency's, `make run`'s layout on free
ports). Times are wall clock on one machine. Prints JSON (bench.common.emit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import httpx

from bench.browser import chromium
from bench.browser_latency import trimmed_speech
from bench.common import emit
from bench.viewer import AudioViewer

SENTENCE = "Hello, and welcome to the live room. Please introduce yourself."
THRESHOLD = 0.01  # the idle stream is digital silence, speech is ~0.05-0.2 RMS


def open_room_view(driver, base: str, room: dict, timeout: float = 60) -> None:
    """The console watching `room` over HTTP-FLV, its latency readout up."""
    driver.get(f"{base}/console/?lang=en#rooms/{room['id']}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("const s = window.mtlConsole; return !!(s && s.room && s.lag && s.lag.lag() !== null)"):
            return
        time.sleep(0.3)
    raise RuntimeError("the console's latency readout did not come up")


def page_quiet(driver, seconds: float = 1.0) -> bool:
    return driver.execute_script("return window.mtlConsole.meter.maxSince(Date.now() - arguments[0])",
                                 seconds * 1000) < THRESHOLD / 2


def one_utterance(driver, client: httpx.Client, room: dict, audio: str, viewer: AudioViewer | None,
                  timeout: float = 30) -> dict:
    """Say `audio` once (the room idle and the page quiet first); the readout's figure for its
    speech_start and the two independent ones, each the first loud sound after that speech_start."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (client.get(f"/v1/rooms/{room['id']}").json()["state"] == "idle"
                                               and page_quiet(driver)):
        time.sleep(0.2)
    heard_before = driver.execute_script("return window.mtlConsole.lag.heard.length")
    client.post(f"/v1/rooms/{room['id']}/say", json={"audio": audio}).raise_for_status()
    end = time.monotonic() + timeout
    got = None
    while time.monotonic() < end:
        got = driver.execute_script("""
            const s = window.mtlConsole, h = s.lag.heard.slice(arguments[0]);
            if (!h.length) return {heard: null, clock: s.player.clock, pos: s.player.streamTime(), now: s.lag.lag()};
            const skew = s.lag.skewMs();
            return {heard: h[0], skew_ms: skew, onset: s.meter.firstAbove(arguments[1], h[0].t * 1000 + skew - 50)};""",
                                   heard_before, THRESHOLD)
        if got["heard"] and got["onset"]:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"no readout or no sound for an utterance within {timeout:.0f} s: {got}")
    t = got["heard"]["t"]
    out = {"readout_s": round(got["heard"]["lag_s"], 3),
           "meter_s": round((got["onset"] - got["skew_ms"]) / 1000 - t, 3), "skew_ms": round(got["skew_ms"], 1)}
    if viewer is not None:
        loud = viewer.first_loud_after(t - 0.05)
        out["ffmpeg_flv_s"] = round(loud - t, 3) if loud else None
    return out


def measure(driver, client: httpx.Client, base: str, room: dict, utterances: int, with_ffmpeg: bool = True) -> list[dict]:
    audio, _ = trimmed_speech(client, SENTENCE)
    open_room_view(driver, base, room)
    viewer = None
    if with_ffmpeg:
        viewer = AudioViewer(f"{base}/live/{room['stream_key']}.flv")
        viewer.start()
    try:
        time.sleep(2)
        return [one_utterance(driver, client, room, audio, viewer) for _ in range(utterances)]
    finally:
        if viewer is not None:
            viewer.stop()


def _p50(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running fleet (default: start one)")
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--avatar", default="demo")
    args = parser.parse_args()
    fleet = None
    load_start = os.getloadavg()
    try:
        if args.url is None:
            from bench.conversation_latency import OwnFleet

            fleet = OwnFleet.start("http://127.0.0.1:9/v1", {})
        base = args.url or fleet.url
        with httpx.Client(base_url=base, timeout=60) as client:
            room = client.post("/v1/rooms", json={"avatar_id": args.avatar, "username": "console_latency",
                                                  "language": "en"}).json()
            driver = chromium()
            try:
                driver.set_script_timeout(30)
                samples = measure(driver, client, base, room, args.utterances)
            finally:
                driver.quit()
                client.delete(f"/v1/rooms/{room['id']}")
        diffs = [s["readout_s"] - s["meter_s"] for s in samples]
        emit("console_latency", {
            "fleet": "own (make run layout, free ports)" if fleet else base,
            "utterances": samples,
            "p50_s": {k: _p50(s.get(k) for s in samples) for k in ("readout_s", "meter_s", "ffmpeg_flv_s")},
            "readout_minus_meter_s": {"p50": _p50(diffs), "max_abs": round(max(map(abs, diffs)), 3)},
            "load_avg_1m": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
        })
    finally:
        if fleet is not None:
            fleet.stop()


if __name__ == "__main__":
    main()
