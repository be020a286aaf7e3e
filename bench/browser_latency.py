"""Say-to-ear latency in a real browser: `POST /v1/rooms/{id}/say` (audio given) to the first speech
audio *playing* in a headless Chromium page, for HTTP-FLV (mpegts.js) and HLS side by side.

    python -m bench.browser_latency [--url http://127.0.0.1:8181] [--utterances 10] [--routes flv,hls]

Runs against a running fleet (`make run`). One page (/console/watch.html) plays the room once per
route at the same time (the console's player code, api/static/console/player.js), each into its own
WebAudio level meter sampled every 10 ms; every utterance is timed on both. The speech file is the service's own
TTS with its leading silence cut, so the first loud sample is the first speech sample. Times are
wall-clock on one machine (the POST's send time in Python, the meter's Date.now() in the page).
Needs Debian's chromium + chromium-driver and selenium (the test extras).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import wave
from urllib.parse import urlencode

import httpx
import numpy as np

from bench.browser import chromium, console_errors
from bench.common import emit
from bench.service import poll

SENTENCE = "Hello, and welcome to the live room. Please introduce yourself."
THRESHOLD = 0.01  # RMS of the meter: the idle stream is digital silence, speech is ~0.05-0.2



def trimmed_speech(client: httpx.Client, text: str) -> tuple[str, float]:
    """The service's TTS of `text` without its leading silence, uploaded: (file ref, duration s)."""
    job = poll(client, client.post("/v1/tts", json={"text": text}).json()["job_id"])
    if job["status"] != "finished":
        raise RuntimeError(f"TTS failed: {job['error']}")
    with wave.open(io.BytesIO(client.get(job["result"]["url"]).content)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    level = np.abs(pcm.astype(np.float32) / 32768)
    start = int(np.argmax(level > 0.02))
    pcm = pcm[max(0, start - rate // 100):]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    r = client.post("/v1/files", files={"file": ("speech.wav", buf.getvalue(), "audio/wav")})
    r.raise_for_status()
    return r.json()["file"], pcm.size / rate


def page_state(driver, routes: list[str]) -> dict:
    return driver.execute_script("""
      const out = {};
      for (const r of arguments[0]) {
        const p = window.watch[r];
        out[r] = { t: p.video.currentTime, buffer: p.player.bufferAhead(), level: p.meter.level,
                   w: p.video.videoWidth, reconnects: p.player.reconnects };
      }
      return out;""", routes)


def wait_playing(driver, routes: list[str], timeout: float = 60) -> None:
    first = page_state(driver, routes)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        now = page_state(driver, routes)
        if all(now[r]["t"] > first[r]["t"] + 0.5 and now[r]["w"] > 0 for r in routes):
            return
    raise RuntimeError(f"the page does not play every route: {page_state(driver, routes)}")


def quiet(driver, routes: list[str], seconds: float = 1.0) -> bool:
    since = int(time.time() * 1000 - seconds * 1000)
    levels = driver.execute_script(
        "return arguments[0].map(r => window.watch[r].meter.maxSince(arguments[1]))", routes, since)
    return max(levels) < THRESHOLD / 2


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--utterances", type=int, default=10)
    parser.add_argument("--routes", default="flv,hls")
    parser.add_argument("--avatar", default="demo")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--timeout", type=float, default=30.0, help="longest wait for one utterance, s")
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    client = httpx.Client(base_url=args.url, timeout=60, headers=headers)
    audio, duration = trimmed_speech(client, SENTENCE)
    room = client.post("/v1/rooms", json={"avatar_id": args.avatar, "username": "browser_latency"}).json()
    urls = {"flv": f"{args.url}/live/{room['stream_key']}.flv", "hls": room["urls"]["hls"]}
    # Both routes exist before the page opens (the HLS playlist appears after the first fragments).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ("hls" in routes and httpx.get(urls["hls"]).status_code != 200
                                           or not client.get(f"/v1/rooms/{room['id']}").json().get("publishing")):
        time.sleep(0.5)
    latencies: dict[str, list[float]] = {r: [] for r in routes}
    server_side: list[float] = []
    buffers: dict[str, list[float]] = {r: [] for r in routes}
    driver = chromium()
    try:
        driver.set_script_timeout(30)
        query = urlencode({"key": room["stream_key"], "routes": ",".join(routes), "meter": "1", "hls": urls["hls"]})
        driver.get(f"{args.url}/console/watch.html?{query}")
        wait_playing(driver, routes)
        time.sleep(3)
        for _ in range(args.utterances):
            deadline = time.monotonic() + 20
            while not quiet(driver, routes) and time.monotonic() < deadline:
                time.sleep(0.1)
            state = page_state(driver, routes)
            for r in routes:
                buffers[r].append(state[r]["buffer"])
            sent = time.time()
            r = client.post(f"/v1/rooms/{room['id']}/say", json={"audio": audio})
            r.raise_for_status()
            heard: dict[str, float | None] = {route: None for route in routes}
            end = time.monotonic() + args.timeout
            while time.monotonic() < end and any(v is None for v in heard.values()):
                time.sleep(0.05)
                found = driver.execute_script(
                    "return arguments[0].map(r => window.watch[r].meter.firstAbove(arguments[1], arguments[2]))",
                    routes, THRESHOLD, int(sent * 1000))
                for route, t in zip(routes, found):
                    if t is not None and heard[route] is None:
                        heard[route] = t / 1000 - sent
            for route, value in heard.items():
                if value is not None:
                    latencies[route].append(value)
            events = client.get(f"/v1/rooms/{room['id']}/events").json()
            starts = [e for e in events if e["event"] == "speech_start" and e.get("queued_at", 0) >= sent - 1]
            if starts:
                server_side.append(starts[-1]["t"] - starts[-1]["queued_at"])
            time.sleep(duration + 0.5)
        errors = console_errors(driver)
        final = page_state(driver, routes)
    finally:
        driver.quit()
        client.delete(f"/v1/rooms/{room['id']}")
    emit("browser_latency", {
        "utterances": args.utterances,
        "speech_s": round(duration, 2),
        "say_to_first_speech_playing_in_chromium_s": {
            route: {"p50": pct(v, 50), "p95": pct(v, 95), "min": round(min(v), 3) if v else None,
                    "max": round(max(v), 3) if v else None, "mean": round(statistics.mean(v), 3) if v else None,
                    "measured": len(v)} for route, v in latencies.items()},
        "player_buffer_before_say_s": {route: pct(v, 50) for route, v in buffers.items()},
        "say_to_speech_start_in_publisher_s": {"p50": pct(server_side, 50), "p95": pct(server_side, 95)},
        "reconnects": {route: final[route]["reconnects"] for route in routes},
        "page_errors": errors[:5],
        "target_p50_s": {"flv": 1.5},
    })


if __name__ == "__main__":
    main()
