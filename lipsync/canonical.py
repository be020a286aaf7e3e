"""A head-pose-free frame of reference for the mouth, shared by enrollment, rendering and scoring.

Frames are mapped by a similarity transform (rotation, uniform scale, translation) fitted on
landmarks that do not move when a person speaks (eye corners, nose bridge and tip), so lips and jaw
of different frames, and of different videos of the same person, can be compared and exchanged.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatars.face import INNER_LOWER, INNER_UPPER, LIPS_OUTER

# Eye corners, nose bridge and nose tip: rigid with the skull, untouched by the lips and jaw.
STABLE = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4]
EYE_OUTER = (33, 263)
# The 40 lip landmarks lip-sync papers score (20 outer, 20 inner), then the chin, which the jaw carries.
LIP40 = LIPS_OUTER + INNER_UPPER + INNER_LOWER[1:-1]
CHIN = [152, 148, 176, 149, 377, 400, 378]
SHAPE = LIP40 + CHIN
# Nose tip and face sides: where they sit relative to the eyes tells yaw and pitch.
POSE = [1, 4, 234, 454, 93, 323]
# How appearances are resampled into the canonical frame (enrollment) and back out of it (rendering).
# Two bilinear resamplings soften: a frame mapped in and out keeps 87-94% of its fine detail (the mean
# absolute difference from a 1.5 px blur) where bicubic keeps 100-101%. Redubbed development clips
# (pd-reagan-farewell, pd-tedlieu-wda), the mouth's detail against the real footage's: 0.83 / 0.84
# bilinear, 0.91 / 0.93 bicubic; mouth SSIM 0.744 / 0.738 -> 0.734 / 0.731 (sharper detail that is
# not in the same place scores lower), LMD 3.573 / 1.936 -> 3.564 / 1.958; render 531 -> 366 fps.
RESAMPLING = cv2.INTER_CUBIC
# Positions inside SHAPE of the inner-lip midpoints (13 upper, 14 lower) and the mouth corners.
UPPER_MID, LOWER_MID = SHAPE.index(13), SHAPE.index(14)
CORNER_L, CORNER_R = SHAPE.index(61), SHAPE.index(291)
# Positions inside SHAPE of the facing inner-lip points, upper and lower (corners excluded).
UPPER_INNER = [SHAPE.index(i) for i in INNER_UPPER[1:-1]]
LOWER_INNER = [SHAPE.index(i) for i in INNER_LOWER[1:-1]]


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity mapping points `src` onto `dst` (Umeyama, no reflection)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    e = np.diag([1.0, sign])
    rot = u @ e @ vt
    scale = float(np.trace(np.diag(sig) @ e) / max(1e-9, (s**2).sum() / len(src)))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)


def invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    out = np.zeros((2, 3))
    out[:, :2] = a
    out[:, 2] = -a @ m[:, 2]
    return out


def inter_ocular(landmarks: np.ndarray) -> float:
    a, b = landmarks[EYE_OUTER[0]], landmarks[EYE_OUTER[1]]
    return float(np.hypot(*(a - b)))


def inner_opening(shape: np.ndarray) -> np.ndarray:
    """Inner-lip opening (13 to 14) of one [P,2] or many [N,P,2] SHAPE point sets, in their units."""
    shape = np.asarray(shape)
    return np.linalg.norm(shape[..., LOWER_MID, :] - shape[..., UPPER_MID, :], axis=-1)
