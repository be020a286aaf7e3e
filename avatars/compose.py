"""Crop-only compositing shared by every engine: only the touched box is converted and blended,
never the whole frame (the official PIL path costs ~41 ms per 1080p frame; this ~1-2 ms)."""

from __future__ import annotations

import cv2
import numpy as np

from avatars.deform import Box


def blend_region(frame: np.ndarray, box: Box, region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend `region` (box-sized BGR uint8) into `frame` in place with `mask` (box-sized, float 0..1
    or uint8 0..255); returns `frame`."""
    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    if region.shape[:2] != (h, w):
        # Bilinear, as the official paste-back does; Lanczos is for the downscale into the model.
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_LINEAR)
    if mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32) * (1.0 / 255.0) if mask.dtype == np.uint8 else mask.astype(np.float32, copy=False)
    dst = frame[y1:y2, x1:x2]
    # One fused C++ pass (per-pixel weights) instead of several numpy temporaries.
    dst[:] = cv2.blendLinear(np.ascontiguousarray(region), np.ascontiguousarray(dst), alpha, 1.0 - alpha)
    return frame
