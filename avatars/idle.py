"""A natural idle loop from one portrait: slight head sway and blinks, so an image avatar looks alive.

The motion starts and ends at rest with zero velocity, so the ping-pong cycle (clip, then its
reverse) turns around without a visible jerk.
"""

from __future__ import annotations

import math

import numpy as np

from avatars.deform import clip_box, edge_taper, grid, smoothstep, warp_region
from avatars.face import (CHIN, EYE_L_CORNERS, EYE_L_LOWER, EYE_L_UPPER, EYE_R_CORNERS, EYE_R_LOWER,
                          EYE_R_UPPER, FACE_OVAL)


def _head_field(frame_shape, lm: np.ndarray, angle_rad: float, shift: tuple[float, float]):
    """Rotate/shift the head about the neck, fading out with distance from the face."""
    oval = lm[FACE_OVAL]
    x1, y1 = oval.min(axis=0)
    x2, y2 = oval.max(axis=0)
    fw, fh = x2 - x1, y2 - y1
    box = clip_box((int(x1 - 0.6 * fw), int(y1 - 0.6 * fh), int(x2 + 0.6 * fw), int(y2 + 0.5 * fh)), frame_shape)
    gx, gy = grid(box)
    pivot = np.array([(x1 + x2) / 2, float(lm[CHIN, 1]) + 0.15 * fh], np.float32)
    rx, ry = gx - pivot[0], gy - pivot[1]
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    dx = (c * rx - s * ry) - rx + shift[0]
    dy = (s * rx + c * ry) - ry + shift[1]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    dist = np.hypot((gx - cx) / (0.5 * fw), (gy - cy) / (0.5 * fh))
    weight = 1.0 - smoothstep((dist - 1.05) / 0.5)
    taper = edge_taper(box, 10.0)
    return box, (dx * weight * taper).astype(np.float32), (dy * weight * taper).astype(np.float32)


def _blink(frame: np.ndarray, lm: np.ndarray, amount: float) -> np.ndarray:
    """Lower the upper eyelids by `amount` (0 open .. 1 closed)."""
    for upper, lower, corners in ((EYE_L_UPPER, EYE_L_LOWER, EYE_L_CORNERS), (EYE_R_UPPER, EYE_R_LOWER,
                                                                                 EYE_R_CORNERS)):
        up_y = float(lm[upper, 1].mean())
        lo_y = float(lm[lower, 1].mean())
        xl, xr = sorted((float(lm[corners[0], 0]), float(lm[corners[1], 0])))
        eye_h = max(2.0, lo_y - up_y)
        ew = xr - xl
        box = clip_box((int(xl - 0.3 * ew), int(up_y - 1.6 * eye_h - 4), int(xr + 0.3 * ew),
                        int(lo_y + 0.8 * eye_h + 4)), frame.shape)
        gx, gy = grid(box)
        across = np.sqrt(np.clip(1 - ((gx - (xl + xr) / 2) / (0.62 * ew)) ** 2, 0, 1))
        # The lid slides down over the eye; the skin above it stretches to follow.
        below_lid = 1.0 - smoothstep((gy - lo_y) / (0.8 * eye_h + 2))
        above = smoothstep((gy - (up_y - 1.5 * eye_h)) / (1.5 * eye_h))
        dy = amount * eye_h * 1.05 * across * above * below_lid * edge_taper(box, 4.0)
        frame[box[1]:box[3], box[0]:box[2]] = warp_region(frame, box, np.zeros_like(dy), dy.astype(np.float32))
    return frame


def idle_frames(image: np.ndarray, landmarks: np.ndarray, n_frames: int, fps: int = 25, seed: int = 0):
    """Yield `n_frames` BGR frames of the portrait breathing, swaying and blinking."""
    rng = np.random.default_rng(seed)
    oval = landmarks[FACE_OVAL]
    face_h = float(oval[:, 1].max() - oval[:, 1].min())
    blink_len = max(3, round(0.16 * fps))
    blinks = sorted(rng.choice(np.arange(fps, max(fps + 1, n_frames - blink_len - 2)), size=max(1, n_frames // (3 * fps)),
                               replace=False)) if n_frames > fps + blink_len else []
    for i in range(n_frames):
        # Half-cosine envelopes: zero velocity at both ends of the clip.
        phase = 0.5 - 0.5 * math.cos(math.pi * i / max(1, n_frames - 1))
        sway = math.sin(2 * math.pi * phase)
        angle = math.radians(1.4) * sway
        shift = (0.010 * face_h * math.sin(math.pi * phase), 0.006 * face_h * math.sin(2 * math.pi * phase * 1.5))
        frame = image.copy()
        box, dx, dy = _head_field(image.shape, landmarks, angle, shift)
        frame[box[1]:box[3], box[0]:box[2]] = warp_region(image, box, dx, dy)
        for start in blinks:
            k = i - start
            if 0 <= k < blink_len:
                _blink(frame, landmarks, math.sin(math.pi * (k + 0.5) / blink_len))
        yield frame
