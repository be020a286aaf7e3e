"""Dense displacement-field warps of an image region (used for mouth/jaw motion, blinks and
head sway). A field gives, per destination pixel, how far content moved; sampling at
``dst - d`` is the usual backward approximation, exact enough for displacements that vary
smoothly except where we repaint (the mouth opening)."""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def clip_box(box: Box, shape: tuple[int, ...]) -> Box:
    h, w = shape[:2]
    x1, y1, x2, y2 = box
    return max(0, int(x1)), max(0, int(y1)), min(w, int(x2)), min(h, int(y2))


def grid(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (frame space) of every pixel in `box`, float32."""
    x1, y1, x2, y2 = box
    xs = np.arange(x1, x2, dtype=np.float32)
    ys = np.arange(y1, y2, dtype=np.float32)
    return np.meshgrid(xs, ys)


def edge_taper(box: Box, width: float = 6.0) -> np.ndarray:
    """1 inside, falling to 0 at the region border, so a warped region always meets its surround."""
    x1, y1, x2, y2 = box
    wx = smoothstep(np.minimum(np.arange(x2 - x1) + 0.5, np.arange(x2 - x1)[::-1] + 0.5) / width)
    wy = smoothstep(np.minimum(np.arange(y2 - y1) + 0.5, np.arange(y2 - y1)[::-1] + 0.5) / width)
    return (wy[:, None] * wx[None, :]).astype(np.float32)


def warp_region(frame: np.ndarray, box: Box, dx: np.ndarray, dy: np.ndarray, pad: int | None = None) -> np.ndarray:
    """The content of `box` after moving it by (dx, dy); reads a padded neighbourhood of `frame`."""
    x1, y1, x2, y2 = box
    if pad is None:
        pad = int(np.ceil(max(float(np.abs(dx).max(initial=0)), float(np.abs(dy).max(initial=0))))) + 2
    h, w = frame.shape[:2]
    sx1, sy1, sx2, sy2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
    src = frame[sy1:sy2, sx1:sx2]
    gx, gy = np.meshgrid(np.arange(x1 - sx1, x2 - sx1, dtype=np.float32),
                         np.arange(y1 - sy1, y2 - sy1, dtype=np.float32))
    return cv2.remap(src, gx - dx, gy - dy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
