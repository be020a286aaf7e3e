"""The `warp` engine: lips and jaw deformed from the avatar's landmarks, no neural weights.

Per frame, a displacement field over the lower face moves the lower lip, chin and jaw down
(a lens-shaped opening between the mouth corners, the jaw moving as a whole below the lip,
fading out into the neck), lifts the upper lip a little and spreads or rounds the corners.
The gap that opens between the lips is painted as a mouth interior: a dark cavity, darker
deeper in, a band of upper teeth under the upper lip and a hint of tongue when wide open.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatars.deform import Box, clip_box, edge_taper, grid, smoothstep, warp_region
from avatars.face import CHIN, INNER_LOWER, INNER_UPPER, JAW, LIPS_OUTER, NOSE_TIP

CAVITY_BGR = np.array([48, 42, 100], np.float32)
DEEP_BGR = np.array([26, 20, 52], np.float32)
TEETH_BGR = np.array([205, 212, 222], np.float32)
TONGUE_BGR = np.array([85, 80, 165], np.float32)


@dataclass(frozen=True)
class WarpOptions:
    strength: float = 1.0  # scales the opening; 0 disables motion
    max_open: float = 0.30  # widest gap as a share of mouth width
    teeth: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 3.0:
            raise ValueError("strength must be within 0..3")


@dataclass(frozen=True)
class MouthGeometry:
    box: Box  # region the warp may touch
    cx: float
    mouth_w: float
    in_cx: float  # centre and half width between the inner-lip corners, where the opening tapers to 0
    in_half: float
    seam_x: np.ndarray  # inner-lip line, sorted by x
    seam_y: np.ndarray
    upper_in: np.ndarray  # [k,2] inner upper lip points
    lower_in: np.ndarray
    lower_out_y: float  # bottom of the lower lip
    chin_y: float
    nose_y: float
    jaw_half_w: float
    teeth_at_rest: bool  # the source mouth is parted and shows teeth already: keep those, paint none


def geometry(landmarks: np.ndarray, frame_shape: tuple[int, ...]) -> MouthGeometry:
    up = landmarks[INNER_UPPER]
    lo = landmarks[INNER_LOWER]
    seam = (up + lo) / 2.0
    order = np.argsort(seam[:, 0])
    outer = landmarks[LIPS_OUTER]
    xl, xr = float(outer[:, 0].min()), float(outer[:, 0].max())
    chin_y = float(landmarks[CHIN, 1])
    nose_y = float(landmarks[NOSE_TIP, 1])
    jaw = landmarks[JAW]
    face_h = chin_y - nose_y
    box = clip_box((int(jaw[:, 0].min() - 4), int(nose_y - 0.1 * face_h),
                    int(jaw[:, 0].max() + 5), int(chin_y + 0.75 * face_h)), frame_shape)
    return MouthGeometry(
        box=box, cx=(xl + xr) / 2.0, mouth_w=max(8.0, xr - xl),
        in_cx=float(up[0, 0] + up[-1, 0]) / 2.0, in_half=max(4.0, abs(float(up[-1, 0] - up[0, 0])) / 2.0), seam_x=seam[order, 0], seam_y=seam[order, 1],
        upper_in=up, lower_in=lo, lower_out_y=float(landmarks[17, 1]), chin_y=chin_y, nose_y=nose_y,
        jaw_half_w=max(8.0, (float(jaw[:, 0].max()) - float(jaw[:, 0].min())) / 2.0),
        teeth_at_rest=bool(float(landmarks[14, 1] - landmarks[13, 1]) > 0.06 * max(8.0, xr - xl)),
    )


def _lens(x: np.ndarray, cx: float, half: float) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - ((x - cx) / half) ** 2, 0.0, 1.0))


def _fields(g: MouthGeometry, open_px: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = grid(g.box)
    seam = np.interp(gx[0], g.seam_x, g.seam_y).astype(np.float32)[None, :]
    below = gy - seam
    lip_w = _lens(gx, g.in_cx, g.in_half)
    jaw_w = np.exp(-(((gx - g.cx) / (g.jaw_half_w * 0.85)) ** 4))
    lip_h = max(2.0, g.lower_out_y - float(seam.mean()))
    t = smoothstep(below / (lip_h * 1.6))
    w = lip_w * (1.0 - t) + np.maximum(jaw_w, lip_w) * t
    neck = max(4.0, 0.55 * (g.chin_y - g.nose_y))
    v = 1.0 - smoothstep((gy - g.chin_y) / neck)
    s = smoothstep(below / 1.5 + 0.5)
    dy = open_px * s * w * v
    # The upper lip rises a little, fading out towards the nose.
    span = max(2.0, float(seam.mean()) - g.nose_y)
    above = (1.0 - s) * (1.0 - smoothstep(-below / span)) ** 2 * lip_w
    dy -= 0.12 * open_px * above
    # Corners spread (bright vowels) or round in (o/u); the open jaw also narrows the mouth a bit.
    bump = np.exp(-((gx - g.cx) / (0.9 * g.mouth_w)) ** 2 - (below / (1.2 * lip_h)) ** 2)
    dx = ((0.06 * width - 0.25 * open_px / g.mouth_w * 0.3) * (gx - g.cx)) * bump
    taper = edge_taper(g.box)
    return (dx * taper).astype(np.float32), (dy * taper).astype(np.float32)


def _displaced(points: np.ndarray, g: MouthGeometry, dy: np.ndarray) -> np.ndarray:
    """Where source points land under the backward field: solve y' = y + dy(x, y') by iteration."""
    x0, y0 = g.box[0], g.box[1]
    h, w = dy.shape
    out = points.copy()
    for _ in range(3):
        xi = np.clip(np.round(out[:, 0] - x0).astype(int), 0, w - 1)
        yi = np.clip(np.round(out[:, 1] - y0).astype(int), 0, h - 1)
        out[:, 1] = points[:, 1] + dy[yi, xi]
    return out


def _opening_polygon(g: MouthGeometry, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gap that opens along the seam: its upper edge is where content just above the seam
    lands, its lower edge where content just below lands. Whatever the source shows on either
    side (lips, or teeth of a smiling portrait) moves with its side and stays visible."""
    seam = np.stack([g.seam_x, g.seam_y], axis=1)
    up = _displaced(seam - [0.0, 1.5], g, dy) + [0.0, 1.5]
    lo = _displaced(seam + [0.0, 1.5], g, dy) - [0.0, 1.5]
    lo[:, 1] = np.maximum(lo[:, 1], up[:, 1])
    return up, lo


def _paint_interior(region: np.ndarray, g: MouthGeometry, open_px: float, dy: np.ndarray,
                    opts: WarpOptions) -> np.ndarray:
    """Paint the mouth interior into `region` (float32 BGR); returns the interior alpha."""
    x0, y0 = g.box[0], g.box[1]
    up, lo = _opening_polygon(g, dy)
    poly = np.concatenate([up, lo[::-1]]) - np.array([x0, y0], np.float32)
    h, w = region.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.fillPoly(alpha, [np.round(poly * 8).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=3)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0).astype(np.float32) / 255.0
    ys = np.arange(h, dtype=np.float32)[:, None]
    # Outside the corners the alpha is zero anyway; extrapolating flat keeps the maths finite.
    top = np.interp(np.arange(w), up[:, 0] - x0, up[:, 1] - y0)[None, :].astype(np.float32)
    bottom = np.interp(np.arange(w), lo[:, 0] - x0, lo[:, 1] - y0)[None, :].astype(np.float32)
    gap = np.maximum(bottom - top, 1.0)
    depth = (ys - top) / gap
    # Darker towards the middle of the opening, as light falls off into the mouth.
    shade = np.clip(1.0 - 4.0 * (depth - 0.5) ** 2, 0.0, 1.0)[..., None]
    colour = CAVITY_BGR * (1 - shade) + DEEP_BGR * shade
    if opts.teeth and not g.teeth_at_rest:
        # Teeth show in proportion to the local opening, so they taper into the corners.
        teeth_h = np.minimum(0.4 * gap, 0.13 * g.mouth_w)
        in_teeth = np.clip((teeth_h - (ys - top)) / 1.2, 0.0, 1.0)[..., None]
        xs = (np.arange(w, dtype=np.float32)[None, :] + x0 - g.cx) / (g.mouth_w / 2.0)
        teeth_shade = (0.72 + 0.28 * np.clip(1.0 - xs**2, 0.0, 1.0))[..., None]
        colour = colour * (1 - in_teeth) + TEETH_BGR * teeth_shade * in_teeth
    tongue = np.clip((depth - 0.65) / 0.35, 0.0, 1.0)[..., None] * np.minimum(1.0, gap / (0.25 * g.mouth_w))[..., None]
    colour = colour * (1 - tongue * 0.7) + TONGUE_BGR * tongue * 0.7
    a = alpha[..., None]
    region[:] = region * (1 - a) + colour * a
    return alpha


def render_mouth(frame: np.ndarray, landmarks: np.ndarray, open_amount: float, width: float,
                 opts: WarpOptions = WarpOptions()) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """The warped lower-face region of `frame` for one mouth state, with its blend mask (float32
    0..1), or None when the mouth is at rest (the source frame is shown unchanged)."""
    g = geometry(landmarks, frame.shape)
    open_px = float(np.clip(open_amount, 0.0, 1.0)) * opts.strength * opts.max_open * g.mouth_w
    if open_px < 0.5 and abs(width) < 0.05:
        return None
    dx, dy = _fields(g, open_px, float(width) * opts.strength)
    region = warp_region(frame, g.box, dx, dy).astype(np.float32)
    mask = np.clip(np.hypot(dx, dy) * 2.0, 0.0, 1.0)
    if open_px >= 0.5:
        mask = np.maximum(mask, _paint_interior(region, g, open_px, dy, opts))
    mask = cv2.GaussianBlur(mask, (5, 5), 0) * edge_taper(g.box)
    return g.box, np.clip(region, 0, 255).astype(np.uint8), mask
