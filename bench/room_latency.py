"""Latency from `POST /v1/rooms/{id}/say` (audio given) to the first speech a viewer receives.

    python -m bench.room_latency [--url http://127.0.0.1:8181] [--utterances 20]

A viewer pulls the room's RTMP stream with low-latency flags and decodes its audio as it
arrives; the first speech frame is the first 20 ms of audio above the idle silence after the
request (audio and video share one clock in the stream, so this is the first speech frame).
Runs against a running fleet (`make run`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import numpy as np

from bench.common import emit
from bench.service import poll
from bench.viewer import AudioViewer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--avatar", default="demo")
    args = parser.parse_args()
    client = httpx.Client(base_url=args.url, timeout=60)
    speech = poll(client, client.post("/v1/tts", json={"text": "Hello, and welcome to the live room."}).json()["job_id"])
    audio = speech["result"]["file"]
    room = client.post("/v1/rooms", json={"avatar_id": args.avatar, "username": "latency"}).json()
    viewer = AudioViewer(room["urls"]["rtmp"])
    viewer.start()
    latencies, server_side = [], []
    try:
        time.sleep(4)
        for _ in range(args.utterances):
            deadline = time.time() + 15
            while not viewer.quiet_since(1.0) and time.time() < deadline:
                time.sleep(0.05)
            sent = time.time()
            r = client.post(f"/v1/rooms/{room['id']}/say", json={"audio": audio})
            r.raise_for_status()
            heard = None
            while heard is None and time.time() < sent + 10:
                time.sleep(0.01)
                heard = viewer.first_loud_after(sent)
            if heard is not None:
                latencies.append(heard - sent)
            events = client.get(f"/v1/rooms/{room['id']}/events").json()
            starts = [e for e in events if e["event"] == "speech_start" and e.get("queued_at", 0) >= sent - 1]
            if starts:
                server_side.append(starts[-1]["t"] - starts[-1]["queued_at"])
            time.sleep(speech["result"]["duration_s"] + 0.5)
    finally:
        viewer.stop()
        client.delete(f"/v1/rooms/{room['id']}")
    pct = lambda v, q: round(float(np.percentile(v, q)), 3) if v else None  # noqa: E731
    emit("room_latency", {
        "utterances": args.utterances, "measured": len(latencies),
        "say_to_first_speech_heard_s": {"p50": pct(latencies, 50), "p95": pct(latencies, 95),
                                        "min": round(min(latencies), 3) if latencies else None,
                                        "max": round(max(latencies), 3) if latencies else None},
        "say_to_speech_start_in_publisher_s": {"p50": pct(server_side, 50), "p95": pct(server_side, 95)},
        "target_p50_s": 1.0,
        "mean_s": round(statistics.mean(latencies), 3) if latencies else None,
    })


if __name__ == "__main__":
    main()
