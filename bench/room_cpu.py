"""CPU seconds per second of stream of one speaking 720p room on an enrolled avatar: the stream
worker's own path (the live render, x264 and AAC encoding, muxing) into a local FLV file, timed by
the process's CPU clock, so a machine shared with other work changes the figure less than fps.

    python -m bench.room_cpu [--avatar DIR] [--frames 250] [--bgr]

`--avatar`: a prepared, enrolled avatar directory (default: one built like bench.exemplar_fps, from
../shared/media/real-talk-2.mp4 padded into 720x1280). `--bgr`: the route rooms took before the
YUV route (template decoded to BGR, the whole frame converted for the encoder), for comparison.
Four speaking rooms on two cores need well under 0.5 each (the API, Redis and the media server
share the cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the fleet runs its workers (core/fleet.py)

import cv2
import numpy as np
from scipy.signal import resample_poly

from avatars import yuv
from avatars.store import Avatar
from bench.common import emit
from bench.exemplar_fps import DEFAULT_CLIP, build
from core.live import FPS, RtmpSession
from core.media import decode_audio
from core.settings import get_settings
from lipsync.engines import live_engine
from lipsync.mouth import SAMPLE_RATE, analyse, frame_count
from workers.frames import Continuity, SpeechSource


def measure(avatar: Avatar, frames: int, live: bool, out: Path) -> dict:
    settings = get_settings()
    cv2.setNumThreads(1)  # as workers/stream.py main() sets it
    cache = yuv.configure_cache(settings.live_frame_cache_mb if live else 0)
    if live:
        yuv._fill(avatar, cache)  # what warm_cache does when a room starts
    rate = settings.live_audio_rate
    pcm = decode_audio(DEFAULT_CLIP, rate)
    pcm = np.tile(pcm, int(np.ceil(frames * rate / FPS / pcm.size)))[:frames * rate // FPS]
    g = np.gcd(rate, SAMPLE_RATE)
    speech16 = resample_poly(pcm, SAMPLE_RATE // g, rate // g).astype(np.float32)
    n = frame_count(speech16.size, FPS)
    engine = live_engine(settings)
    session = RtmpSession(str(out), settings, avatar.width, avatar.height)
    source = SpeechSource(engine.frames(avatar, speech16, 0, n, analyse(speech16, FPS, n), live=live), pcm, n, rate)
    continuity = Continuity()
    source.send(session, 0, continuity)  # the shape prediction, once per utterance
    cpu, wall, sent = time.process_time(), time.perf_counter(), 1
    while source.send(session, sent, continuity):
        sent += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    session.close()
    return {"route": "yuv" if live else "bgr", "engine": engine.choose(avatar).name, "frames": sent - 1,
            "cpu_ms_per_frame": round(1000 * cpu / (sent - 1), 2),
            "cpu_s_per_stream_s": round(cpu / ((sent - 1) / FPS), 3),
            "wall_ms_per_frame": round(1000 * wall / (sent - 1), 2), "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--avatar", type=Path)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--bgr", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        avatar = Avatar(args.avatar) if args.avatar else build(DEFAULT_CLIP, "720x1280", Path(tmp))
        emit("room_cpu", {"size": f"{avatar.width}x{avatar.height}",
                          **measure(avatar, args.frames, not args.bgr, Path(tmp) / "room.flv")})


if __name__ == "__main__":
    main()
