"""`warp` engine speed on one core: mouth render + crop blend per frame, encode excluded.

    python -m bench.warp_fps [--avatar-dir results/avatars/demo] [--frames 500]

Reports frames/s with frames already decoded (the engine's own cost) and including the JPEG
decode of the avatar frame (what serving costs end to end before the encoder).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from avatars.compose import blend_region
from avatars.store import Avatar
from bench.common import emit
from core.settings import get_settings
from lipsync.warp import WarpOptions, render_mouth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--avatar-dir", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=500)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    avatar = Avatar(args.avatar_dir or get_settings().data_dir / "avatars" / get_settings().demo_avatar_id)
    rng = np.random.default_rng(0)
    # A speech-like mouth track: syllable-rate opening with pauses.
    t = np.arange(args.frames) / 25
    opening = np.clip(0.6 + 0.4 * np.sin(2 * np.pi * 4.5 * t), 0, 1) * (np.sin(2 * np.pi * 0.3 * t) > -0.6)
    width = rng.uniform(-0.6, 0.6, args.frames)
    decoded = [avatar.frame(i) for i in range(min(avatar.cycle_length, 50))]
    opts = WarpOptions()

    def run(with_decode: bool) -> float:
        start = time.perf_counter()
        for k in range(args.frames):
            frame = avatar.frame(k) if with_decode else decoded[k % len(decoded)].copy()
            out = render_mouth(frame, avatar.landmarks_at(k), float(opening[k]), float(width[k]), opts)
            if out is not None:
                blend_region(frame, *out)
        return args.frames / (time.perf_counter() - start)

    run(False)
    emit("warp_fps", {
        "avatar": avatar.id, "size": f"{avatar.width}x{avatar.height}", "frames": args.frames, "cores": 1,
        "fps_render_blend": round(run(False), 1),
        "fps_with_jpeg_decode": round(run(True), 1),
        "target_fps": 100,
    })


if __name__ == "__main__":
    main()
