"""Face boxes by MuseTalk's convention and lower-face blend masks built from landmarks."""

from __future__ import annotations

import cv2
import numpy as np

from avatars.face import BOX_POINTS, CHIN, JAW, NOSE_29, NOSE_TIP

MASK_SIZE = 256


def musetalk_box(landmarks: np.ndarray, frame_shape: tuple[int, ...], bbox_shift: int = 0,
                 extra_margin: int = 10) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) as MuseTalk's preparation computes it from 68-point landmarks: x spans the
    landmarks, the bottom is the chin, the top is nose point 29 (moved by `bbox_shift`) raised by
    the nose-to-chin distance; v1.5 adds `extra_margin` px below the chin."""
    pts = landmarks[BOX_POINTS]
    h, w = frame_shape[:2]
    half_face_y = float(landmarks[NOSE_29, 1]) + bbox_shift
    bottom = float(pts[:, 1].max())
    upper = half_face_y - (bottom - half_face_y)
    x1, x2 = float(pts[:, 0].min()), float(pts[:, 0].max())
    y2 = min(h, int(bottom + extra_margin))
    box = (max(0, int(x1)), max(0, int(upper)), min(w, int(x2)), y2)
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        raise ValueError("face box degenerate")
    return box


def lower_face_mask(landmarks: np.ndarray, box: tuple[int, int, int, int], size: int = MASK_SIZE) -> np.ndarray:
    """Blend mask in face-box coordinates (size x size, uint8): the jaw region below the nose,
    the official 'jaw' parsing mode approximated from landmarks, with a feathered edge."""
    x1, y1, x2, y2 = box
    sx, sy = size / max(1, x2 - x1), size / max(1, y2 - y1)
    jaw = landmarks[JAW].copy()
    top_y = float(landmarks[NOSE_TIP, 1])
    # Close the polygon across the face just under the nose tip, then push it below the chin a bit
    # so a jaw that opens stays inside the blend region.
    poly = np.concatenate([jaw, [[jaw[-1, 0], top_y], [jaw[0, 0], top_y]]])
    centre_y = float(landmarks[CHIN, 1])
    poly[:, 1] = np.where(poly[:, 1] > top_y, poly[:, 1] + 0.08 * (centre_y - top_y), poly[:, 1])
    pts = np.stack([(poly[:, 0] - x1) * sx, (poly[:, 1] - y1) * sy], axis=1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
    k = int(size * 0.1) | 1
    return cv2.GaussianBlur(mask, (k, k), 0)
