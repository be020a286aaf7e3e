"""The compositing step at 720p and 1080p: a 256x256 face crop blended into the frame.

    python -m bench.blend [--repeats 300]

Compares the crop-only vectorised blend used by every engine with a whole-frame PIL paste
(the official MuseTalk path).
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
from PIL import Image

from avatars.compose import blend_region
from bench.common import emit


def _pil_whole_frame(frame: np.ndarray, crop: np.ndarray, box, mask: np.ndarray) -> np.ndarray:
    # What the official blending does: the whole frame through PIL, paste with a full-frame mask.
    x1, y1, x2, y2 = box
    body = Image.fromarray(frame[:, :, ::-1])
    face = Image.fromarray(cv2.resize(crop, (x2 - x1, y2 - y1))[:, :, ::-1])
    full_mask = Image.new("L", body.size, 0)
    full_mask.paste(Image.fromarray(cv2.resize(mask, (x2 - x1, y2 - y1))), (x1, y1))
    canvas = body.copy()
    canvas.paste(face, (x1, y1))
    body.paste(canvas, (0, 0), full_mask)
    return np.asarray(body)[:, :, ::-1]


def measure(width: int, height: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (height, width, 3), np.uint8)
    face = int(height * 0.3)
    box = (width // 2 - face // 2, height // 3, width // 2 + face // 2, height // 3 + face)
    crop = rng.integers(0, 255, (256, 256, 3), np.uint8)
    mask = cv2.GaussianBlur((rng.random((256, 256)) > 0.5).astype(np.uint8) * 255, (25, 25), 0)
    out = {}
    for name, fn in (("crop_blend_ms", lambda f: blend_region(f, box, crop, mask)),
                     ("pil_whole_frame_ms", lambda f: _pil_whole_frame(f, crop, box, mask))):
        fn(frame.copy())
        start = time.perf_counter()
        for _ in range(repeats if name == "crop_blend_ms" else max(10, repeats // 10)):
            fn(frame.copy())
        n = repeats if name == "crop_blend_ms" else max(10, repeats // 10)
        out[name] = round((time.perf_counter() - start) / n * 1000, 3)
    copy_start = time.perf_counter()
    for _ in range(repeats):
        frame.copy()
    out["frame_copy_ms_included"] = round((time.perf_counter() - copy_start) / repeats * 1000, 3)
    out["face_box_px"] = face
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    emit("blend", {"720p": measure(1280, 720, args.repeats), "1080p": measure(1920, 1080, args.repeats),
                   "target_ms": 5, "cores": 1})


if __name__ == "__main__":
    main()
