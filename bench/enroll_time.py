"""Enrollment cost: a talking clip looped to `--seconds` (default 60 s) -> the presenter's MouthBank.

    python -m bench.enroll_time [CLIP.mp4] [--seconds 60]

Times `lipsync.enroll.enroll` in a process that has already imported mediapipe (as the avatar
worker has) and reports wall time, frames per second and peak RSS. Target: a 1-minute sample in
under 2 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from lipsync.enroll import enroll
from bench.common import emit
from core.media import run_ffmpeg

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "real-talk-2.mp4"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip", nargs="?", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    import mediapipe  # noqa: F401  -- the worker has it loaded before its first job

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sample = tmp / "sample.mp4"
        run_ffmpeg(["-v", "error", "-y", "-stream_loop", "-1", "-i", str(args.clip), "-t", str(args.seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-c:a", "aac", str(sample)])
        start = time.perf_counter()
        meta = enroll(sample, tmp / "mouth")
        wall = time.perf_counter() - start
    emit("enroll_time", {
        "clip": str(args.clip), "sample_s": meta["duration_s"], "frames": meta["frames"],
        "exemplars": meta["exemplars"], "wall_s": round(wall, 2), "fps": round(meta["frames"] / wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_s": 120.0,
    })


if __name__ == "__main__":
    main()
