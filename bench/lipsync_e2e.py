"""Wall time of `POST /v1/lipsync` for 10 s of audio on the sun avatar, to a finished MP4.

    python -m bench.lipsync_e2e [--url http://127.0.0.1:8181] [--seconds 10] [--repeats 3]

Runs against a running fleet (`make run`). Uses ../shared/media (avatar-sun.mp4, speech-zh-sun.wav);
without it, the demo avatar and TTS speech.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ZH_TEXT, emit
from bench.service import SHARED_MEDIA, ensure_avatar, poll, upload
from core.media import run_ffmpeg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    client = httpx.Client(base_url=args.url, timeout=120)
    with tempfile.TemporaryDirectory() as tmp:
        if (SHARED_MEDIA / "avatar-sun.mp4").exists():
            avatar = ensure_avatar(client, "sun", SHARED_MEDIA / "avatar-sun.mp4")
            clip = Path(tmp) / "speech-10s.wav"
            run_ffmpeg(["-v", "error", "-y", "-i", str(SHARED_MEDIA / "speech-zh-sun.wav"), "-t", str(args.seconds),
                        str(clip)])
            audio = upload(client, clip)
        else:
            avatar = client.get("/v1/avatars/demo").json()
            job = poll(client, client.post("/v1/tts", json={"text": ZH_TEXT}).json()["job_id"])
            audio = job["result"]["file"]
    walls, results = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        r = client.post("/v1/lipsync", json={"avatar_id": avatar["id"], "audio": audio})
        r.raise_for_status()
        job = poll(client, r.json()["job_id"])
        walls.append(time.perf_counter() - start)
        results.append(job["result"] if job["status"] == "finished" else job["error"])
    emit("lipsync_e2e", {
        "avatar": avatar["id"], "size": f"{avatar['manifest']['width']}x{avatar['manifest']['height']}",
        "audio_s": results[0]["duration_s"], "frames": results[0]["frames"], "engine": results[0]["engine"],
        "wall_s": [round(w, 3) for w in walls], "wall_s_median": round(statistics.median(walls), 3),
        "target_s": 5.0,
    })


if __name__ == "__main__":
    main()
