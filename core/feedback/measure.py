"""Per-frame face measures and their summary over an answer.

The mesh runs with iris refinement (478 points, z included). Head pose comes from the mesh's 3D
points (the normal of the plane spanned by the eye/mouth axis and the forehead-chin axis); gaze
from the iris centre relative to each eye's corners. All lengths are normalised by the face's own
size, so the measures do not depend on the video's resolution or the distance to the camera.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from avatars.face import FaceMesher

log = logging.getLogger(__name__)

# Mesh indices (mediapipe face mesh, refined).
IRIS = (468, 473)  # iris centres of the image-left and image-right eye
EYES = ((33, 133, 159, 145), (362, 263, 386, 374))  # (left corner, right corner, upper lid, lower lid) in the image
MOUTH_L, MOUTH_R, LIP_IN_UP, LIP_IN_LO, LIP_OUT_UP, LIP_OUT_LO = 61, 291, 13, 14, 0, 17
FOREHEAD, CHIN, NOSE_TIP, CHEEK_L, CHEEK_R = 10, 152, 1, 234, 454

NOSE_DEPTH = 0.6
# A frontal face's forehead-chin line leans back in the mesh's model by about this much.
PITCH_BIAS_DEG = 8.0
# Looking at the camera: head within these angles and the irises near the middle of the eyes.
MAX_YAW_DEG = 15.0
MAX_PITCH_DEG = 15.0
MAX_GAZE_H = 0.12  # iris offset from the eye's middle, as a share of the eye's width
MAX_GAZE_V = 0.12
# Sideways gaze adds to the head's yaw by roughly this many degrees per unit of iris offset.
GAZE_DEG_PER_UNIT = 100.0


@dataclass(frozen=True)
class FrameMeasure:
    yaw: float  # degrees, + = the face turned toward the image's right
    pitch: float  # degrees, + = looking down
    gaze_h: float  # iris offset from the eye's middle (share of the eye's width), + = image right
    gaze_v: float  # + = down
    eye_open: float  # lid gap / eye width, both eyes averaged
    mouth_open: float  # inner lip gap / mouth width
    smile: float  # mouth-corner lift / mouth width (+ = corners above the lip centre)
    lip_thickness: float  # (outer lip height - inner gap) / mouth width; pressed lips are thin
    nose_x: float  # nose tip position in face widths (for head motion)
    nose_y: float

    @property
    def looking(self) -> bool:
        return self.away_reason is None

    @property
    def away_reason(self) -> str | None:
        """Why this frame is not looking at the camera: side, down, up, eyes; None when it is."""
        yaw = self.yaw + GAZE_DEG_PER_UNIT * self.gaze_h
        if abs(yaw) > MAX_YAW_DEG:
            return "side"
        if self.pitch > MAX_PITCH_DEG or self.gaze_v > MAX_GAZE_V:
            return "down"
        if self.pitch < -MAX_PITCH_DEG or self.gaze_v < -MAX_GAZE_V:
            return "up"
        return "eyes" if abs(self.gaze_h) > MAX_GAZE_H else None


def head_pose(p: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees. Yaw from the nose tip's offset from the cheeks' middle (a nose
    standing NOSE_DEPTH half-face-widths out moves by sin(yaw) of that): the mesh's learned depth
    understates turns. Pitch from the 3D normal of the forehead-chin and eye/mouth axes."""
    half_w = float(np.linalg.norm(p[CHEEK_R, :2] - p[CHEEK_L, :2])) / 2 + 1e-9
    offset = float(p[NOSE_TIP, 0] - (p[CHEEK_L, 0] + p[CHEEK_R, 0]) / 2) / half_w
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset / NOSE_DEPTH))))
    x_axis = (p[EYES[1][1]] - p[EYES[0][0]]) + (p[MOUTH_R] - p[MOUTH_L])
    normal = np.cross(p[CHIN] - p[FOREHEAD], x_axis)  # toward the camera (-z) for a frontal face
    normal /= np.linalg.norm(normal) + 1e-9
    pitch = math.degrees(math.atan2(normal[1], -normal[2])) - PITCH_BIAS_DEG
    return yaw, pitch


def _eye(p: np.ndarray, iris: int, corners: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """(horizontal gaze, vertical gaze, openness) of one eye, in eye widths along its own axis."""
    a, b, up, lo = (p[i, :2] for i in corners)
    axis = b - a
    width2 = float(axis @ axis) + 1e-9
    rel = p[iris, :2] - (a + b) / 2
    h = float(rel @ axis) / width2
    v = float(axis[0] * rel[1] - axis[1] * rel[0]) / width2
    return h, v, float(np.linalg.norm(lo - up)) / math.sqrt(width2)


def frame_measure(p: np.ndarray) -> FrameMeasure:
    """Measures of one face from its 478 mesh points (pixels; z in the same scale)."""
    yaw, pitch = head_pose(p)
    eyes = [_eye(p, iris, corners) for iris, corners in zip(IRIS, EYES)]
    mouth_w = float(np.linalg.norm(p[MOUTH_R, :2] - p[MOUTH_L, :2])) + 1e-9
    inner = float(np.linalg.norm(p[LIP_IN_LO, :2] - p[LIP_IN_UP, :2]))
    outer = float(np.linalg.norm(p[LIP_OUT_LO, :2] - p[LIP_OUT_UP, :2]))
    centre_y = (p[LIP_IN_UP, 1] + p[LIP_IN_LO, 1]) / 2
    corners_y = (p[MOUTH_L, 1] + p[MOUTH_R, 1]) / 2
    face_w = float(np.linalg.norm(p[CHEEK_R, :2] - p[CHEEK_L, :2])) + 1e-9
    return FrameMeasure(
        yaw=yaw, pitch=pitch, gaze_h=float(np.mean([e[0] for e in eyes])), gaze_v=float(np.mean([e[1] for e in eyes])),
        eye_open=float(np.mean([e[2] for e in eyes])), mouth_open=inner / mouth_w,
        smile=float(centre_y - corners_y) / mouth_w, lip_thickness=(outer - inner) / mouth_w,
        nose_x=float(p[NOSE_TIP, 0]) / face_w, nose_y=float(p[NOSE_TIP, 1]) / face_w)


class FaceMeasurer:
    """The refined face mesh (irises) in tracking mode, one per worker process."""

    def __init__(self) -> None:
        self._mesher = FaceMesher(video=True, irises=True)

    def points(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        pts = self._mesher.landmarks3d(frame_bgr)
        return None if pts is None else pts.astype(np.float64)

    def measure(self, frame_bgr: np.ndarray) -> FrameMeasure | None:
        pts = self.points(frame_bgr)
        return frame_measure(pts) if pts is not None and len(pts) >= 478 else None

    def reset(self) -> None:
        """Forget the tracked face: a new video must not start from the last one's face."""
        self._mesher.reset()

    def close(self) -> None:
        self._mesher.close()


@dataclass(frozen=True)
class AnswerMeasures:
    """The answer's measures over all sampled frames (face-dependent ones over frames with a face)."""

    samples: int
    duration_s: float
    face_share: float  # sampled frames with a face
    looking_share: float  # sampled frames looking at the camera (of all samples)
    away_reasons: dict[str, float]  # share of all samples not looking, per reason
    yaw_deg: float | None  # medians over face frames
    pitch_deg: float | None
    eye_open: float | None
    blinks: int
    blink_rate_per_min: float | None
    smile: float | None
    lip_thickness: float | None
    speaking_share: float | None  # face frames whose mouth moves
    head_motion: float | None  # std of the nose position, in face widths

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# A blink: the eyes' openness falls below this share of the answer's typical openness.
BLINK_DROP = 0.55
# Mouth motion between consecutive samples (in mouth widths) that counts as speaking.
SPEAKING_MOTION = 0.03


def _count_blinks(openness: np.ndarray) -> int:
    if openness.size < 3:
        return 0
    closed = openness < BLINK_DROP * float(np.median(openness))
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


def _speaking_share(mouth: np.ndarray) -> float:
    if mouth.size < 2:
        return 0.0
    motion = np.abs(np.diff(mouth))
    return float(np.mean(motion > SPEAKING_MOTION))


def summarise(samples: list[FrameMeasure | None], interval_s: float) -> AnswerMeasures:
    faces = [m for m in samples if m is not None]
    n = max(1, len(samples))
    duration = len(samples) * interval_s
    reasons: dict[str, float] = {}
    for m in samples:
        reason = "no_face" if m is None else m.away_reason
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0.0) + 1.0 / n
    if not faces:
        return AnswerMeasures(len(samples), duration, 0.0, 0.0, reasons, None, None, None, 0, None, None, None,
                              None, None)

    def col(name: str) -> np.ndarray:
        return np.array([getattr(m, name) for m in faces], np.float64)

    blinks = _count_blinks(col("eye_open"))
    face_time = len(faces) * interval_s
    motion = float(np.hypot(np.std(col("nose_x")), np.std(col("nose_y"))))
    return AnswerMeasures(
        samples=len(samples), duration_s=duration, face_share=len(faces) / n,
        looking_share=sum(m.looking for m in faces) / n, away_reasons=reasons,
        yaw_deg=float(np.median(col("yaw"))), pitch_deg=float(np.median(col("pitch"))),
        eye_open=float(np.median(col("eye_open"))), blinks=blinks,
        blink_rate_per_min=blinks * 60.0 / face_time if face_time > 0 else None,
        smile=float(np.median(col("smile"))), lip_thickness=float(np.median(col("lip_thickness"))),
        speaking_share=_speaking_share(col("mouth_open")), head_motion=motion)
