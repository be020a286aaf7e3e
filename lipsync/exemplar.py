"""The `exemplar` engine: the presenter's own mouth, from their enrolled talking footage.

Per frame: the lips + chin shape predicted from the audio (the avatar's MouthBank: a ridge map
from MFCC context 80 ms before to 120 ms after the frame), the two enrolled appearances closest
to that shape and to the template frame's head pose, each morphed onto the predicted shape by a
thin-plate spline and carried into the frame by the template's own canonical transform in one
resampling, blended together, colour-matched to the frame on the mask's rim and feathered in.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import av
import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from avatars import yuv
from lipsync.canonical import (LIP40, POSE, RESAMPLING, SHAPE, STABLE, apply, inner_opening, inter_ocular, invert,
                               similarity)
from avatars.compose import blend_region
from avatars.deform import smoothstep
from avatars.face import FACE_OVAL, JAW
from lipsync.mouthbank import MASK_SCALE, MouthBank, load_bank
from avatars.store import Avatar
from core.lru import Lru
from lipsync.mouth import MouthTrack, analyse

log = logging.getLogger(__name__)


class NotEnrolled(LookupError):
    """The avatar has no talking footage to take its mouth from."""


@dataclass(frozen=True)
class ExemplarOptions:
    # Head pose against mouth shape when choosing appearances. Chosen by how faithfully the render
    # draws the predicted shape (r of the re-meshed opening with the prediction, which needs no real
    # footage) on the development clips: pd-reagan-farewell 0.36 at 0, 0.60 / 0.66 / 0.69 at 0.25 /
    # 0.5 / 1.0; pd-tedlieu-wda 0.92-0.93 throughout. An appearance from another head pose, morphed,
    # draws its lips where the mesh reads another shape.
    pose_weight: float = 1.0
    gap_weight: float = 1.0  # lip gap against the rest of the shape
    stickiness: float = 0.5  # cost factor for the appearances used on the previous frame
    exemplars: int = 2  # appearances blended per frame
    grid_step: int = 6  # px between points where the warp is computed exactly, at most
    # ... and at most this share of the frame's inter-ocular distance. Between those points the warp
    # is interpolated linearly, which on a small face smooths the lips' gap away: at 166 px faces
    # (inter-ocular ~57 px) a 6 px step is a tenth of the inter-ocular distance, about the whole
    # gap of an open mouth, and the render drew ~0.8 of the opening it was given. At 0.05 (3 px
    # there, 4-5 px on the 256 px dev clips, 6 px on a 720p portrait's face): oracle opening r on
    # pd-reagan-farewell 0.868 -> 0.893 at 166 px and 0.881 -> 0.886 at 256 px, its predicted-mouth
    # opening r 0.408 -> 0.433 and 0.403 -> 0.415 (the render's slope on the drawn opening 0.80 ->
    # 0.90); pd-tedlieu-wda within 0.002 of before; LMD ratios to the rotated control within +0.004.
    grid_share: float = 0.05
    colour_follow: float = 0.5  # per-frame update of the colour match, to keep it from flickering
    # Width of the colour match's offset field, as a share of the patch box's larger side; 0: one
    # offset for the whole patch. On the development clips (pd-tedlieu-wda, pd-reagan-farewell) the
    # field left LMD, opening r and SSIM as they were or better (tedlieu SSIM 0.604 -> 0.610); a
    # per-channel gain as well lowered them (0.596), so the match has none.
    shading_sigma: float = 0.15
    # The patch covers the template's own lips and the pasted ones fully, this far beyond them (in
    # inter-ocular distances) before it feathers out: no second lip contour at the corners.
    lip_cover: float = 0.08
    # The template's jaw turns with the change of the lips' gap (JawField), so a template caught with
    # its mouth wide open does not keep its dropped chin under a closed pasted mouth (a long second
    # chin; bench/figures/issue-15/cameron-jaw-hinge-session7.jpg). Only past a dead zone: small
    # differences the pasted lips cover, and a warp on every frame costs a fifth of the render.
    # The fifth session's jaw (a spline through the lips and chin) stayed off: on a turned head it
    # bent the far cheek into a second contour and the patch smeared the old jaw line into the collar.
    # The hinged field, decided on the development clips (pd-tedlieu-wda, pd-reagan-farewell, on
    # predicted mouths): opening r 0.590 -> 0.587 and 0.395 -> 0.401, LMD 2.112 -> 2.124 and
    # 3.869 -> 3.875 (as without, within noise), no second contour on long-cameron's turned head.
    jaw_follow: bool = True
    jaw_reach: float = 0.6  # the moved region ends this far (inter-ocular distances) beyond them
    jaw_dead_zone: float = 0.06  # lip-gap differences (inter-ocular distances) the jaw does not follow
    # The predicted mouth is placed with its upper lip on the template's (the upper lip rides on the
    # skull; the canonical frame, fitted on eyes and nose, misplaces it on a turned head), by at most
    # this share of the inter-ocular distance.
    seat_limit: float = 0.3
    # ... by where the template's upper lip sits on average around the frame (a Gaussian over the
    # template's frames, this many frames' sigma) against where the drawn one does around it: the
    # slow part (head pose) is corrected, while the template's own speech (its upper lip moving
    # with its mouth, out of step with the speech drawn) is not copied onto the drawn mouth, nor is
    # the drawn upper lip's own movement pinned. 0: seated frame by frame. Chosen on the development
    # clips (pd-reagan-farewell, pd-tedlieu-wda at 256 and 166 px; predicted mouths, 0 -> 6): LMD
    # 3.826 -> 3.775, 2.104 -> 2.053, 3.881 -> 3.807, 1.992 -> 1.945; opening r 0.423 -> 0.465, 0.597
    # -> 0.595, 0.424 -> 0.426, 0.587 -> 0.587; LMD ratio to the rotated speech's 0.968 -> 0.992,
    # 0.841 -> 0.827, 0.993 -> 0.987, 0.827 -> 0.818; mouth SSIM up on all four. With the real lips
    # drawn (oracle) LMD fell 5-11% on all four. At 3 or 12 frames about the same.
    seat_sigma: float = 6.0
    # The patch also stays inside the chosen appearances' own lower face as drawn (their cheeks'
    # sides and their chin, moved with the mouth): an appearance from a less turned head, or with
    # its chin higher than the template's, otherwise pasted its own jaw line inside the template's
    # face, a second face contour with its neck's shadow coloured to skin beside it (long-cameron,
    # frame 210 of the test part: bench/figures/issue-15/long-cameron-session9-cheek.jpg).
    own_face: bool = True


# A blend weight under which blend_region leaves a pixel as it was (see _plan).
_INVISIBLE = 1.0 / 600.0

# The jaw turns on its hinges in front of the ears (JawField): below the lips the face moves by its
# height below the hinges. The mask then follows the moved lower lip and jaw line.
_MANDIBLE = np.array(LIP40[:11] + JAW)  # LIPS_OUTER: corner, lower 1-9, corner; then the jaw line
_UPPER_CENTRE, _LOWER_CENTRE = LIP40[15], LIP40[5]

# The outer upper lip without the corners (rows 12-18 of LIPS_OUTER: 270 ... 40).
_UPPER_IN_SHAPE = np.arange(12, 19)
_UPPER_LIP = np.array(LIP40[12:19])

# An appearance's own lower face, as a closed outline: its face sides (in POSE: 234 and 93 on one
# side, 454 and 323 on the other) and its chin (the end of SHAPE), which the warp carries with the
# mouth drawn. Straight from the lower cheek to the chin's side, it runs inside the jaw's angle.
_OWN_SIDES = (POSE.index(234), POSE.index(93), POSE.index(323), POSE.index(454))
_OWN_CHIN = [SHAPE.index(i) for i in (149, 176, 148, 152, 377, 400, 378)]


@dataclass(frozen=True)
class _Plan:
    to_canon: np.ndarray  # frame -> canonical similarity
    chosen: np.ndarray  # appearances blended
    weights: np.ndarray
    box: tuple[int, int, int, int]  # frame box the patch covers
    mask: np.ndarray  # blend mask over the box
    # Where in the box the mask is above 0 (x1, y1, x2, y2 from the box's corner): about 40% of the
    # box, and the only pixels the mouth is drawn on, so the only ones warped and coloured (None:
    # nowhere).
    within: tuple[int, int, int, int] | None
    shape: np.ndarray  # the mouth drawn (canonical), seated on the template's upper lip
    jaw: tuple | None  # ExemplarEngine._jaw_move, or None
    jaw_shares: np.ndarray | None = None  # _grid_shares of the jaw's box


@dataclass
class _State:
    previous: tuple[int, ...] = ()
    shading: np.ndarray | None = None


class _JawReach(NamedTuple):
    """A template frame's jaw before any move (ExemplarEngine._jaw_reach): what _jaw_move needs."""
    box: tuple[int, int, int, int]  # frame box the jaw's warp may touch
    still: JawField  # the field with no gap
    scale: float  # the canonical frame's scale over the frame's
    iod: float  # inter-ocular distance, canonical
    shares: np.ndarray  # _grid_shares over `box`


@dataclass(frozen=True)
class _Template:
    """What drawing a mouth on one template frame needs that does not depend on the mouth drawn:
    worked out once per frame and bank, and kept (ExemplarEngine._template). A room walks through
    the same template frames again and again."""
    to_canon: np.ndarray
    pose_cost: np.ndarray | None  # [K] _choose's cost of each appearance's head pose (None: not weighed)
    box: tuple[int, int, int, int] | None  # ExemplarEngine._roi
    upper_lip: np.ndarray  # the outer upper lip (canonical), where _seated puts the drawn one
    seat_limit: float  # how far _seated may move it (canonical units)
    opening: float  # the template's own inner-lip opening (canonical)
    jaw: _JawReach | None
    lips: np.ndarray  # the outer lips (canonical), which the blend mask covers
    face: np.ndarray  # the face, feathered, at MASK_SCALE (_face_mask)
    lips_cover: np.ndarray  # those lips' hull with the lip cover, feathered, at MASK_SCALE (_lip_cover)

    @property
    def nbytes(self) -> int:
        return (self.face.nbytes + self.lips_cover.nbytes + (self.jaw.shares.nbytes if self.jaw is not None else 0)
                + 2048)


def _to_box(canonical: np.ndarray, to_canon: np.ndarray, box) -> np.ndarray:
    """A canonical-frame map resampled onto the frame box `box`."""
    x1, y1, x2, y2 = box
    m = to_canon.copy()
    m[:, 2] += m[:, :2] @ np.array([x1, y1], np.float64)
    return cv2.warpAffine(canonical, m, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _mask_to_box(canonical: np.ndarray, to_canon: np.ndarray, box, floor: float = 0.0) -> np.ndarray:
    """_to_box for a map that is 0 (or at most `floor`, which is cut to 0) over most of the
    canonical frame, a blend mask: only the box's rows that can read more are resampled, the rest
    are 0. The same values as _to_box: warpAffine works out each row's coordinates alone, so
    starting lower changes none of them (starting further right would, by a 1/1024 px rounding)."""
    # A bilinear sample is at most the largest of the four pixels it reads.
    x, y, w, h = cv2.boundingRect((canonical > floor * 0.999).view(np.uint8))
    x1, y1, x2, y2 = box
    out = np.zeros((y2 - y1, x2 - x1), np.float32)
    if not w:
        return out
    # It reads the pixel below its position and the next: above `floor` only from one pixel
    # before those that are (and a little more for the sample positions' rounding).
    corners = np.array([[x - 1.1, y - 1.1], [x + w + 0.1, y - 1.1], [x - 1.1, y + h + 0.1], [x + w + 0.1, y + h + 0.1]])
    rows = apply(invert(to_canon), corners)[:, 1]
    r1, r2 = max(0, int(np.floor(rows.min())) - 1 - y1), min(y2 - y1, int(np.ceil(rows.max())) + 2 - y1)
    if r2 > r1:
        out[r1:r2] = _to_box(canonical, to_canon, (x1, y1 + r1, x2, y1 + r2))
        if floor > 0:
            cv2.threshold(out[r1:r2], floor, 0.0, cv2.THRESH_TOZERO, dst=out[r1:r2])
    return out


# How far the presenter's colour-matched closed mouth may depart from the template frame inside the
# mask's core: the largest difference of the quartiles of luma and of chroma (YCrCb; quartiles, not
# pixel by pixel, so a jaw a little lower or higher does not count) and the log ratio of fine-texture
# energy, each over its bound; the median over the template's most closed frames must stay <= 1.
# Measured on 11 (template, bank) pairs of the shared clips and the demo portrait (median over 5
# frames): a presenter's own bank 0.56-0.79, another presenter's 1.11-5.94. The bounds were chosen on
# those same pairs: a guard against smears, not an identity test (lipsync/identity.py is, before
# enrollment).
DEPARTURE = {"luma": 16.0, "chroma": 1.8, "texture": 0.45}


def patch_departure(frame: np.ndarray, box, out: np.ndarray, mask: np.ndarray) -> float:
    """The largest of the patch's departures from the frame over its DEPARTURE bound (1 = the bound)."""
    x1, y1, x2, y2 = box
    core = mask[::3, ::3] > 0.6
    if int(core.sum()) < 16:
        return 0.0
    src = np.ascontiguousarray(frame[y1:y2:3, x1:x2:3])
    pat = np.clip(out[::3, ::3], 0, 255).astype(np.uint8)
    a = cv2.cvtColor(pat, cv2.COLOR_BGR2YCrCb).astype(np.float32)
    b = cv2.cvtColor(src, cv2.COLOR_BGR2YCrCb).astype(np.float32)
    quartiles = np.abs(np.percentile(a[core], [25, 50, 75], axis=0) - np.percentile(b[core], [25, 50, 75], axis=0))
    luma = float(quartiles[:, 0].max())
    chroma = float(np.hypot(quartiles[:, 1], quartiles[:, 2]).max())
    fine = [np.abs(y - cv2.GaussianBlur(y, (0, 0), 1.0))[core].mean() for y in (a[..., 0], b[..., 0])]
    texture = abs(float(np.log((fine[0] + 1e-3) / (fine[1] + 1e-3))))
    return max(luma / DEPARTURE["luma"], chroma / DEPARTURE["chroma"], texture / DEPARTURE["texture"])


def _grown(points: np.ndarray, amount: float) -> np.ndarray:
    """A closed outline moved `amount` px away from its centre (inwards when negative), as int32."""
    points = np.asarray(points, np.float64)
    centre = points.mean(axis=0)
    away = points - centre
    out = centre + away * (1.0 + amount / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1.0))
    return np.round(out).astype(np.int32)


def _mean_sq_dist(sets: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean squared distance of each [N,P,2] point set to `points` [P,2]: the same values as
    ((sets - points) ** 2).sum(-1).mean(-1), whose sums over the last axis of two cost numpy five
    times as much (a quarter of a millisecond a frame on a 320-appearance bank)."""
    sq = np.square(sets - points)
    # np.mean's own overhead is most of its cost here; it divides the same sum by the count.
    return np.add.reduce(sq[..., 0] + sq[..., 1], axis=-1) / sq.shape[-2]


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    return 0.5 * r2 * np.log(r2 + np.asarray(1e-9, r2.dtype))


def _pair_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] squared distances between two point sets (x and y summed by hand: numpy's
    sum over an axis of two costs several times as much)."""
    d = np.square(a[:, None, :] - b[None, :, :])
    return d[..., 0] + d[..., 1]


@lru_cache(maxsize=16)
def _tps_frame(fixed_bytes: bytes, moving: int) -> np.ndarray:
    """The TPS system for `moving` control points followed by the fixed ones (float64 bytes, [M,2]),
    with every block that does not involve the moving points filled in: the kernel among the fixed
    points and their affine rows. Callers copy it."""
    fixed = np.frombuffer(fixed_bytes, np.float64).reshape(-1, 2)
    n = moving + len(fixed)
    a = np.zeros((n + 3, n + 3))
    a[moving:n, moving:n] = _tps_kernel(_pair_sq(fixed, fixed))
    a[moving:n, n], a[moving:n, n + 1:] = 1.0, fixed
    a[n, moving:n], a[n + 1:, moving:n] = 1.0, fixed.T
    return a


def _tps_fit(moving: np.ndarray, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weights of thin-plate splines through the control points `moving` [N,2] then `fixed` [M,2]
    (the same for every frame, so their part of the system is built once) with `values` [N+M,V]
    (affine part last)."""
    m, n = len(moving), len(moving) + len(fixed)
    a = _tps_frame(np.ascontiguousarray(fixed, np.float64).tobytes(), m).copy()
    k = _tps_kernel(_pair_sq(moving, np.concatenate([moving, fixed])))
    a[:m, :n] = k
    a[m:n, :m] = k[:, m:].T  # the kernel is symmetric
    a[:m, n], a[:m, n + 1:] = 1.0, moving
    a[n, :m], a[n + 1:, :m] = 1.0, moving.T
    a[np.arange(n), np.arange(n)] += 1e-3
    rhs = np.zeros((n + 3, values.shape[1]))
    rhs[:n] = values
    return np.linalg.solve(a, rhs)


def _coarse_grid(x: int, y: int, w: int, h: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a map computed every `step` px must be sampled so that cv2.resize by `step` puts each
    value on its own pixel: resize reads output pixel j at input (j + 0.5) / step - 0.5, so cell c
    holds pixel c * step + (step - 1) / 2. A grid at c * step drew everything (step - 1) / 2 px
    up and left of where it belongs."""
    return np.meshgrid(*_grid_axes(x, y, w, h, step))


def _grid_axes(x: int, y: int, w: int, h: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """_coarse_grid's x and y coordinates."""
    half = (step - 1) / 2.0
    return (np.arange(0, w + step, step, dtype=np.float64) + x + half,
            np.arange(0, h + step, step, dtype=np.float64) + y + half)


def _tps_eval(ctrl: np.ndarray, weights: np.ndarray, pts: np.ndarray) -> np.ndarray:
    # In float32: the kernel over the whole grid is most of the engine's time, and single precision
    # moves no sample by more than a thousandth of a pixel. Squared distances as |a|^2 + |b|^2 - 2ab
    # (one matrix product instead of an [n, m, 2] temporary), and the kernel computed in place.
    ctrl, pts = ctrl.astype(np.float32), pts.astype(np.float32)
    n = len(ctrl)
    d2 = np.add((pts[:, 0] * pts[:, 0] + pts[:, 1] * pts[:, 1])[:, None],
                (ctrl[:, 0] * ctrl[:, 0] + ctrl[:, 1] * ctrl[:, 1])[None, :])
    t = pts @ ctrl.T
    t *= 2.0
    d2 -= t
    np.maximum(d2, 0.0, out=d2)
    np.add(d2, np.float32(1e-9), out=t)
    np.log(t, out=t)
    d2 *= 0.5
    basis = np.empty((len(pts), n + 3), np.float32)
    np.multiply(d2, t, out=basis[:, :n])
    basis[:, n] = 1.0
    basis[:, n + 1:] = pts
    return basis @ weights.astype(np.float32)


@lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] float32: cv2.GaussianBlur's pass along an axis of `n` samples as a matrix (its kernel
    for `sigma` and its default border, reflect-101, folded in)."""
    ksize = int(round(sigma * 8 + 1)) | 1  # as cv2.GaussianBlur sizes a float image's kernel
    kernel = cv2.getGaussianKernel(ksize, sigma, cv2.CV_32F)
    # Column j: where sample j spreads to.
    return cv2.sepFilter2D(np.eye(n, dtype=np.float32), cv2.CV_32F, np.ones((1, 1), np.float32), kernel,
                           borderType=cv2.BORDER_REFLECT_101)


def _wide_blur(values: np.ndarray, weights: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """cv2.GaussianBlur of `values` [H,W,3] and `weights` [H,W] (float32), for a sigma of a sixth of
    the grid or more: the kernel then spans the grid, and two matrix products cost a tenth of
    OpenCV's direct filter (the same values but for rounding, ~1e-6 relative)."""
    h, w = weights.shape
    planes = np.empty((4, h, w), np.float32)
    planes[:3] = values.transpose(2, 0, 1)
    planes[3] = weights
    across = (planes.reshape(4 * h, w) @ _blur_matrix(w, sigma).T).reshape(4, h, w)
    out = np.matmul(_blur_matrix(h, sigma), across)
    return out[:3].transpose(1, 2, 0), out[3]


@lru_cache(maxsize=16)
def _rim_points(x1: float, y1: float, x2: float, y2: float, n: int) -> np.ndarray:
    """[M,2] points along a box's edges, `n` to a side (corners once): where a warp is pinned."""
    return np.array([[x, y] for x in np.linspace(x1, x2, n) for y in (y1, y2)]
                    + [[x, y] for y in np.linspace(y1, y2, n)[1:-1] for x in (x1, x2)], np.float64)


@dataclass(frozen=True)
class JawField:
    """The template's jaw turned by `gap` (canonical units; < 0 closes it): a vertical move in the
    face's own frame. Nothing moves above the upper lip; from there to the lower lip the move ramps
    up, and below it grows with the height under the hinges up to the whole move (`most`: the chin
    and the jaw line beside it move with the lower lip, the jaw line less towards the ears), fading
    out within `reach` below the chin and beside the jaw. A thin-plate spline through the lips and
    chin, pinned on a box (the fifth session's jaw), bent a turned head's cheek into a second
    contour where its pinned nose and moving jaw line met; this field only slides the face along
    itself."""
    to_canon: np.ndarray
    gap: float
    hinge: float  # canonical y of the hinges
    upper: float  # canonical y of the outer upper and lower lips' centres, and of the chin
    lower: float
    chin: float
    left: float  # canonical x span of the jaw line
    right: float
    reach: float  # canonical units
    # The most any point moves, as a share of the move: the chin goes down by about the lips' gap,
    # not by its height below the hinges over the lower lip's (~1.5x). On the development clips'
    # real footage the chin's canonical y follows the inner lips' gap with a slope of 0.90-1.07
    # (pd-reagan-farewell, pd-tedlieu-wda, at 166 and 256 px), the jaw line's beside it 0.84-1.03.
    # A chin dropped 1.5x read as a *narrower* lip gap on the re-meshed render; capped at 1, with
    # the jaw following every frame (jaw_dead_zone 0) oracle opening r went 0.824 -> 0.840 on
    # pd-reagan-farewell (256 px) and predicted-mouth LMD 2.182 -> 2.146 on pd-tedlieu-wda (256 px);
    # at the dead zone used (0.06) the jaw seldom moves on those clips and the figures stay within 0.004.
    most: float = 1.0

    def share(self, canon: np.ndarray) -> np.ndarray:
        """[N] how much of the move the canonical points make."""
        x, y = canon[:, 0], canon[:, 1]
        turn = np.maximum(0.0, np.minimum(y, self.chin) - self.hinge) / max(self.lower - self.hinge, 1e-6)
        turn = np.minimum(turn, self.most)
        w = smoothstep((y - self.upper) / max(self.lower - self.upper, 1e-6)) * turn
        w *= 1.0 - smoothstep((y - self.chin) / self.reach)
        return w * (1.0 - smoothstep(np.maximum(self.left - x, x - self.right) / self.reach))

    def source(self, points: np.ndarray) -> np.ndarray:
        """[N,2] frame offsets: the pixel drawn at each frame point comes from point + offset."""
        return self.shares(points)[:, None] * self.down()[None, :]

    def shares(self, points: np.ndarray) -> np.ndarray:
        """[N] share of the move at frame points (which does not depend on the gap)."""
        return self.share(np.asarray(points, np.float64) @ self.to_canon[:, :2].T + self.to_canon[:, 2])

    def down(self) -> np.ndarray:
        """The whole move in the frame (x, y): what a point with a share of 1 is offset by."""
        return invert(self.to_canon)[:, :2] @ np.array([0.0, -self.gap])


def _grid_shares(field_: JawField, box, step: int) -> np.ndarray:
    """The jaw's shares of its move on _warp_field's grid over `box`: the same for every gap, so a
    template frame's are worked out once (_Template.jaw)."""
    x1, y1, x2, y2 = box
    gx, gy = _coarse_grid(x1, y1, x2 - x1, y2 - y1, step)
    return field_.shares(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)


def _warp_field(frame: np.ndarray, box, field_: JawField, origin, step: int, shares: np.ndarray) -> None:
    """Moves `frame`'s content (in place, `frame` holding the frame's pixels from `origin` on) by the
    jaw's field inside `box` (frame coordinates; `shares`: _grid_shares); only the part that moves
    by a quarter pixel or more is resampled."""
    x1, y1, x2, y2 = box
    d = (shares.reshape(-1)[:, None] * field_.down()[None, :]).reshape(shares.shape + (2,))
    rows, cols = np.nonzero(np.abs(d).max(axis=-1) >= 0.25)
    if len(rows) == 0:
        return
    # Cells one beyond the moving ones, so the resampled part starts where nothing moves.
    r1, r2 = max(0, rows.min() - 1), min(shares.shape[0] - 1, rows.max() + 1)
    c1, c2 = max(0, cols.min() - 1), min(shares.shape[1] - 1, cols.max() + 1)
    ox, oy = origin
    sx1, sy1 = x1 + c1 * step - ox, y1 + r1 * step - oy
    w, h = min(x2 - ox, sx1 + (c2 - c1 + 1) * step) - sx1, min(y2 - oy, sy1 + (r2 - r1 + 1) * step) - sy1
    if w <= 0 or h <= 0:
        return
    # x and y moves in one two-channel map: one resize, one remap.
    sub = np.ascontiguousarray(d[r1:r2 + 1, c1:c2 + 1], dtype=np.float32)
    xy = cv2.resize(sub, None, fx=step, fy=step, interpolation=cv2.INTER_LINEAR)[:h, :w]
    xy[..., 0] += np.arange(sx1, sx1 + w, dtype=np.float32)
    xy[..., 1] += np.arange(sy1, sy1 + h, dtype=np.float32)[:, None]
    frame[sy1:sy1 + h, sx1:sx1 + w] = cv2.remap(frame, xy, None, RESAMPLING, borderMode=cv2.BORDER_REPLICATE)


def _facts_key(avatar: Avatar, bank: MouthBank) -> tuple:
    """What an avatar's derived facts are made of: a re-prepared template or a re-enrolled bank (another
    reference) gets its own. Not id(bank): a bank reloaded after eviction may reuse a freed one's id."""
    return (str(avatar.path), avatar.n, bank.ref.tobytes())


class ExemplarEngine:
    name = "exemplar"

    def __init__(self, options: ExemplarOptions = ExemplarOptions()) -> None:
        self.options = options
        # (avatar dir, frames, bank's reference) -> _template_uppers, and -> its mouth belongs there
        # (fits); the least recently used go past KEPT_AVATARS (a long-running worker sees every avatar
        # and every re-enrollment).
        self._uppers: Lru[np.ndarray] = Lru(self.KEPT_AVATARS)
        self._fits: Lru[bool] = Lru(self.KEPT_AVATARS)
        self._templates: OrderedDict[tuple, _Template] = OrderedDict()  # least recently used first
        self._templates_bytes = 0
        self._templates_lock = threading.Lock()

    @staticmethod
    def bank(avatar: Avatar) -> MouthBank:
        bank = load_bank(avatar.path)
        if bank is None:
            raise NotEnrolled(f"avatar {avatar.id!r} has no enrolled talking footage")
        return bank

    def frames(self, avatar, audio_16k, start, n_frames, track: MouthTrack | None = None, live: bool = False,
               shapes: np.ndarray | None = None):
        """Composed frames: BGR arrays, or with `live` limited-range yuv420p av.VideoFrames where the
        template allows (what the stream encodes, without a full-frame conversion; avatars.yuv).
        `shapes` ([n,47,2] canonical) draws given mouths instead of the speech's predicted ones:
        bench.redub's oracle, the real footage's own lips, measures the render apart from the prediction."""
        bank = self.bank(avatar)
        track = track or analyse(audio_16k, avatar.fps, n_frames)
        shapes = bank.predict_shapes(audio_16k, track) if shapes is None else shapes
        state = _State()
        fits = self.fits(avatar, bank)
        seat = not (self.options.seat_limit and self.options.seat_sigma and fits)
        if not seat:
            shapes = self.seated(avatar, bank, start, shapes)
        template = yuv.TemplateYuv() if live and fits else None
        for k in range(n_frames):
            if not fits:
                yield _warp_fallback(avatar.frame(start + k), avatar.landmarks_at(start + k), track, k)
                continue
            frame = template.frame(avatar, start + k) if template is not None else None
            if frame is None:
                yield self.render_shape(avatar, bank, start + k, shapes[k], state, seat=seat)
            else:
                yield self.render_yuv(frame, avatar.landmarks_at(start + k), bank, shapes[k], state, seat=seat)

    def fits(self, avatar: Avatar, bank: MouthBank) -> bool:
        """Does the enrolled mouth belong on this template? A bank that does not (another person's
        enrollment that slipped through) is never pasted: the avatar speaks by warp."""
        return self._fits.get(_facts_key(avatar, bank), lambda: self._belongs(avatar, bank))

    def _belongs(self, avatar: Avatar, bank: MouthBank) -> bool:
        """The person check that guards enrollment (lipsync/identity.py: geometry, lip-to-skin
        contrast, texture), between the template and the bank's own sample. Banks enrolled before
        the sample's presenter was kept fall back to colour: their closed mouth composed on a few
        template frames must not depart from them (DEPARTURE). Colour alone cannot tell a person
        filmed in another light from another person (long-cameron's own cuts departed 1.7-9x the
        bound), so it is the fallback only."""
        from lipsync.identity import distance, presenter_of_avatar

        ours = presenter_of_avatar(avatar) if bank.presenter is not None else None
        if ours is not None:
            verdict = distance(ours, bank.presenter)
            if verdict["score"] > 1.0:
                log.warning("avatar %s: its enrolled mouth shows another person (%s); not pasted, warp instead.",
                            avatar.id, verdict)
            return verdict["score"] <= 1.0
        scores = [self._rest_departure(avatar, bank, i) for i in _closed_frames(avatar)]
        if float(np.median(scores)) > 1.0:
            log.warning("avatar %s: its enrolled mouth departs from the template (%s); not pasted, warp "
                        "instead. The enrollment may show another person.", avatar.id, np.round(scores, 2))
        return float(np.median(scores)) <= 1.0

    def _rest_departure(self, avatar: Avatar, bank: MouthBank, i: int) -> float:
        frame, landmarks, state = avatar.frame(i), avatar.landmarks_at(i), _State()
        t = self._template(frame.shape, landmarks, bank)
        to_canon, box = t.to_canon, t.box
        chosen, weights = self._choose(bank, bank.rest, t, state)
        if box is None:
            return 0.0
        out, mask = self._compose(bank, bank.rest, chosen, weights, to_canon, box)
        self._match_colour(frame, box, out, mask, state)
        return patch_departure(frame, box, out, mask)

    def render_shape(self, avatar: Avatar, bank: MouthBank, cycle_index: int, shape: np.ndarray,
                     state: _State | None = None, seat: bool = True) -> np.ndarray:
        """The template frame at `cycle_index` with the presenter's mouth in `shape` (canonical).
        `seat=False`: `shape` is already placed (ExemplarEngine.seated)."""
        return self.render_decoded(avatar.frame(cycle_index), avatar.landmarks_at(cycle_index), bank, shape, state,
                                   seat)

    def render_decoded(self, frame: np.ndarray, landmarks: np.ndarray, bank: MouthBank, shape: np.ndarray,
                       state: _State | None = None, seat: bool = True) -> np.ndarray:
        """`frame` (modified in place and returned) with the mouth in `shape`."""
        state = state or _State()
        plan = self._plan(frame.shape, landmarks, bank, shape, state, seat)
        if plan is not None:
            self._paint(frame, (0, 0), plan, bank, state)
        return frame

    def render_yuv(self, frame: av.VideoFrame, landmarks: np.ndarray, bank: MouthBank, shape: np.ndarray,
                   state: _State, seat: bool = True) -> av.VideoFrame:
        """render_decoded on a limited-range yuv420p frame (modified in place and returned): only a
        window around the mouth is converted to BGR, drawn on, and put back where it was drawn."""
        plan = self._plan((frame.height, frame.width), landmarks, bank, shape, state, seat)
        if plan is None:
            return frame
        parts = []
        if plan.within is not None:
            x1, y1 = plan.box[:2]
            sx1, sy1, sx2, sy2 = plan.within
            parts.append((x1 + sx1, y1 + sy1, x1 + sx2, y1 + sy2))
        if plan.jaw is not None:
            parts.append(plan.jaw[0])
        corners = np.array(parts)
        win = yuv.window((*corners[:, :2].min(0), *corners[:, 2:].max(0)), frame.width, frame.height)
        region = yuv.read_bgr(frame, win)
        before = region.copy()
        self._paint(region, win[:2], plan, bank, state)
        # What the jaw's warp resampled and the mouth was blended on: every pixel that changed.
        # Any channel differs: the largest over the channels (numpy's any() or | over strided
        # channels cost five to fifty times as much).
        b, g, r = cv2.split(cv2.absdiff(region, before))
        changed = cv2.max(cv2.max(b, g), r)
        np.minimum(changed, 1, out=changed)
        yuv.write_bgr(frame, win, region, changed)
        return frame

    def _plan(self, frame_shape, landmarks: np.ndarray, bank: MouthBank, shape: np.ndarray,
              state: _State, seat: bool = True) -> _Plan | None:
        """Where the mouth goes in a frame, which appearances draw it and its blend mask (None: off
        the frame, or nothing to draw). `seat=False`: `shape` is already placed (seated)."""
        t = self._template(frame_shape, landmarks, bank)
        chosen, weights = self._choose(bank, shape, t, state)
        if t.box is None:
            return None
        if self.options.seat_limit and seat:
            shape = self._seated(t, shape)
        jaw = self._jaw_move(t, shape) if self.options.jaw_follow else None
        lips, face, lips_cover = t.lips, t.face, t.lips_cover
        if jaw is not None:
            # The mask keeps to the face as the warp leaves it: its outline and lips where the jaw moved.
            landmarks = landmarks.copy()
            moved = landmarks[_MANDIBLE].astype(np.float64)
            landmarks[_MANDIBLE] = moved - jaw[1].source(moved)
            lips, face = apply(t.to_canon, landmarks[LIP40[:20]]), self._face_mask(bank, t.to_canon, landmarks)
            lips_cover = self._lip_cover(bank, lips)
        # The feather's far tail changes no pixel (below 1/600 a blend moves a pixel by under half a
        # level, whatever the two colours): cut, it leaves a fifth less of the box to warp and blend.
        own = self._own_face(bank, shape, chosen, weights) if self.options.own_face else None
        mask = _mask_to_box(self._blend_mask(bank, lips, face, lips_cover, shape, own), MASK_SCALE * t.to_canon, t.box, _INVISIBLE)
        x, y, w, h = cv2.boundingRect((mask > 0).view(np.uint8))
        # An empty mask draws nothing, and leaves the colour match as it was (no rim to match on).
        within = (x, y, x + w, y + h) if w and h else None
        if within is None and jaw is None:
            return None
        return _Plan(t.to_canon, chosen, weights, t.box, mask, within, shape, jaw, t.jaw.shares if jaw is not None else None)

    # Template frames kept per process (_template): the face masks make up nearly all of it.
    TEMPLATE_BUDGET = 48 << 20
    KEPT_AVATARS = 64

    def _template(self, frame_shape, landmarks: np.ndarray, bank: MouthBank) -> _Template:
        """The template frame's _Template, from the cache (keyed by everything it is made of, so a
        re-enrolled bank or another avatar never reads another's) or worked out and kept."""
        key = (bank.ref.tobytes(), bank.mask.shape, tuple(frame_shape[:2]), landmarks.tobytes())
        with self._templates_lock:
            t = self._templates.get(key)
            if t is not None:
                self._templates.move_to_end(key)
                return t
        t = self._new_template(frame_shape, landmarks, bank)
        with self._templates_lock:
            if key in self._templates:  # another room's thread got there first
                return self._templates[key]
            self._templates[key] = t
            self._templates_bytes += t.nbytes
            while self._templates_bytes > self.TEMPLATE_BUDGET and len(self._templates) > 1:
                self._templates_bytes -= self._templates.popitem(last=False)[1].nbytes
        return t

    def _new_template(self, frame_shape, landmarks: np.ndarray, bank: MouthBank) -> _Template:
        to_canon = similarity(landmarks[STABLE], bank.ref)
        lips = apply(to_canon, landmarks[LIP40[:20]])
        pose = (landmarks[POSE] @ to_canon[:, :2].T + to_canon[:, 2]).astype(np.float32)
        pose_cost = (self.options.pose_weight * _mean_sq_dist(bank.poses, pose) / (0.03 * bank.iod) ** 2
                     if self.options.pose_weight else None)
        scale = float(np.sqrt(abs(np.linalg.det(to_canon[:, :2]))))
        iod = inter_ocular(landmarks) * scale  # canonical
        ours = apply(to_canon, landmarks).astype(np.float64)
        return _Template(to_canon, pose_cost, self._roi(frame_shape, to_canon, bank),
                         upper_lip=apply(to_canon, landmarks[_UPPER_LIP]),
                         seat_limit=self.options.seat_limit * iod,
                         opening=inner_opening(ours[SHAPE][None])[0],
                         jaw=self._jaw_reach(frame_shape, to_canon, ours, scale, iod),
                         lips=lips, face=self._face_mask(bank, to_canon, landmarks),
                         lips_cover=self._lip_cover(bank, lips))

    def _paint(self, region: np.ndarray, origin, plan: _Plan, bank: MouthBank, state: _State) -> None:
        """Draw the planned mouth into `region`, the frame's pixels from `origin` = (x, y) on, which
        hold at least the jaw's box and the patch box's part where the mask is above 0 (plan.within)."""
        ox, oy = origin
        if plan.jaw is not None:
            _warp_field(region, *plan.jaw, origin, self._jaw_step, plan.jaw_shares)
        if plan.within is None:
            return
        sx1, sy1, sx2, sy2 = plan.within
        out = self._warp(bank, plan.shape, plan.chosen, plan.weights, plan.to_canon, plan.box, plan.within)
        x1, y1, x2, y2 = plan.box
        local = (x1 - ox, y1 - oy, x2 - ox, y2 - oy)
        self._match_colour(region, local, out, plan.mask, state, plan.within)
        drawn = (local[0] + sx1, local[1] + sy1, local[0] + sx2, local[1] + sy2)
        out += np.float32(0.5)  # rounded, as astype truncates
        blend_region(region, drawn, out.astype(np.uint8), plan.mask[sy1:sy2, sx1:sx2])

    @staticmethod
    def _seated(t: _Template, shape: np.ndarray) -> np.ndarray:
        """`shape` moved so its upper lip sits where the template frame's is."""
        offset = (t.upper_lip - shape[_UPPER_IN_SHAPE]).mean(axis=0)
        # np.linalg.norm's own sum, without its overhead
        offset *= min(1.0, t.seat_limit / max(float(np.sqrt(offset.dot(offset))), 1e-6))
        return (shape + offset).astype(np.float32)

    def seated(self, avatar: Avatar, bank: MouthBank, start: int, shapes: np.ndarray) -> np.ndarray:
        """`shapes` ([n,47,2] canonical, drawn from cycle index `start` on) moved so their upper lip
        sits where the template's does, both averaged over time (ExemplarOptions.seat_sigma), by at
        most seat_limit inter-ocular distances."""
        uppers = self._template_uppers(avatar, bank)
        target = uppers[[avatar.forward_index(start + k) for k in range(len(shapes))]]
        drawn = gaussian_filter1d(shapes[:, _UPPER_IN_SHAPE].mean(axis=1).astype(np.float64), self.options.seat_sigma,
                                  axis=0, mode="nearest", truncate=3.0)
        offset = target - drawn
        limit = self.options.seat_limit * bank.iod
        offset *= np.minimum(1.0, limit / np.maximum(np.linalg.norm(offset, axis=1), 1e-6))[:, None]
        return (shapes + offset[:, None, :]).astype(np.float32)

    def _template_uppers(self, avatar: Avatar, bank: MouthBank) -> np.ndarray:
        """[n,2] the template's outer upper lip (centre, canonical) at each of its frames, averaged
        over time as the cycle plays them (forwards, then backwards: the ends mirror)."""
        def make() -> np.ndarray:
            raw = np.array([apply(similarity(l[STABLE], bank.ref), l[_UPPER_LIP]).mean(axis=0) for l in avatar.landmarks])
            # "reflect" repeats the end frame, as the cycle does (forwards, then backwards).
            return gaussian_filter1d(raw, self.options.seat_sigma, axis=0, mode="reflect", truncate=3.0)

        return self._uppers.get(_facts_key(avatar, bank), make)

    def _jaw_move(self, t: _Template, shape: np.ndarray):
        """How to turn the template's jaw by the change of the lips' gap: (frame box, JawField), or
        None when it is already there. The patch then lands on a face whose jaw is where its mouth
        is. Without it a template caught with its mouth wide open kept its dropped chin under a
        closed pasted mouth (a long second chin), and re-meshed renders followed the template's own
        opening (long-cameron: r 0.19 with the template's, against none between the prediction and
        the template)."""
        if t.jaw is None:
            return None
        box, still, scale, iod, _ = t.jaw
        gap = float(inner_opening(shape[None])[0] - t.opening)
        # Small differences stay (the pasted lips cover them, and a warp for each costs a fifth of
        # the render); past the dead zone the jaw moves by the rest, so it never jumps.
        gap = float(np.sign(gap)) * min(max(0.0, abs(gap) - self.options.jaw_dead_zone * iod), 0.4 * iod)
        if abs(gap) * still.most / scale < 0.5:
            # No point moves further than the lower lip and chin (JawField.most): under half a pixel
            # there, nothing needs warping.
            return None  # the template's jaw is already where the speech puts it
        return box, replace(still, gap=gap)

    def _jaw_reach(self, frame_shape, to_canon: np.ndarray, ours: np.ndarray, scale: float,
                   iod: float) -> _JawReach | None:
        """The template frame's jaw (`ours`: its landmarks, canonical) for _jaw_move, or None when the
        box is too small to warp."""
        jaw = ours[JAW]
        field_ = JawField(to_canon, 0.0, hinge=float(jaw[[0, -1], 1].mean()), upper=float(ours[_UPPER_CENTRE, 1]),
                          lower=float(ours[_LOWER_CENTRE, 1]), chin=float(jaw[:, 1].max()),
                          left=float(jaw[:, 0].min()), right=float(jaw[:, 0].max()),
                          reach=self.options.jaw_reach * iod)
        corners = np.array([[field_.left - field_.reach, field_.upper], [field_.right + field_.reach, field_.upper],
                            [field_.left - field_.reach, field_.chin + field_.reach],
                            [field_.right + field_.reach, field_.chin + field_.reach]])
        frame_pts = apply(invert(to_canon), corners)
        lo, hi = np.floor(frame_pts.min(0)).astype(int), np.ceil(frame_pts.max(0)).astype(int)
        fh, fw = frame_shape[:2]
        box = int(max(0, lo[0])), int(max(0, lo[1])), int(min(fw, hi[0])), int(min(fh, hi[1]))
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            return None
        return _JawReach(box, field_, scale, iod, _grid_shares(field_, box, self._jaw_step))

    @property
    def _jaw_step(self) -> int:
        return 2 * self.options.grid_step  # px between the jaw's exact points: it is smoother

    def _choose(self, bank: MouthBank, shape: np.ndarray, t: _Template, state: _State):
        iod = bank.iod
        shape_cost = _mean_sq_dist(bank.shapes, shape) / (0.02 * iod) ** 2
        # The gap between the lips is what a viewer reads first; an appearance whose own gap differs
        # would have to be stretched, showing lip where there should be mouth (or the reverse).
        gap_cost = ((bank.openings - inner_opening(shape)) / (0.01 * iod)) ** 2
        cost = shape_cost + self.options.gap_weight * gap_cost
        if t.pose_cost is not None:
            cost = cost + t.pose_cost
        if state.previous:
            cost[list(state.previous)] *= self.options.stickiness
        order = np.argsort(cost)[:self.options.exemplars]
        c = cost[order] + 1e-6
        weights = (1.0 / c) / (1.0 / c).sum() if len(order) > 1 else np.ones(1)
        state.previous = tuple(int(i) for i in order)
        return order, weights

    @staticmethod
    def _roi(frame_shape, to_canon: np.ndarray, bank: MouthBank):
        """The frame box the canonical patch covers (None when it falls outside the frame)."""
        w, h = bank.size
        to_frame = cv2.invertAffineTransform(to_canon)
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) @ to_frame[:, :2].T + to_frame[:, 2]
        x1, y1 = np.floor(corners.min(axis=0)).astype(int)
        x2, y2 = np.ceil(corners.max(axis=0)).astype(int)
        fh, fw = frame_shape[:2]
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(fw, x2), min(fh, y2)
        if x2 - x1 < 8 or y2 - y1 < 8:
            return None
        return int(x1), int(y1), int(x2), int(y2)

    def alpha(self, frame_shape, landmarks: np.ndarray, bank: MouthBank, shape: np.ndarray) -> np.ndarray:
        """[H,W] how much of each frame pixel the pasted mouth replaces (1: only the presenter's
        pasted mouth shows there), for a frame with `landmarks` and the mouth in `shape`, before any
        move of the template's jaw (the render's mask when its jaw stays)."""
        t = self._template(frame_shape, landmarks, bank)
        out = np.zeros(frame_shape[:2], np.float32)
        if t.box is None:
            return out
        own = self._own_face(bank, shape, *self._choose(bank, shape, t, _State())) if self.options.own_face else None
        x1, y1, x2, y2 = t.box
        out[y1:y2, x1:x2] = _to_box(self._blend_mask(bank, t.lips, t.face, t.lips_cover, shape, own), MASK_SCALE * t.to_canon, t.box)
        return out

    @staticmethod
    def _mask_sigma(bank: MouthBank) -> tuple[float, float]:
        """(inter-ocular distance, feather's sigma) at MASK_SCALE."""
        iod = bank.iod * MASK_SCALE
        return iod, max(1.0, 0.03 * iod)

    def _blend_mask(self, bank: MouthBank, lips: np.ndarray, face: np.ndarray, lips_cover: np.ndarray,
                    shape: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        """The blend mask for one frame, in the canonical frame at MASK_SCALE (a feathered mask needs no
        more; the two blurs cost a quarter): the bank's mask, within the appearances' own face
        (`own`, _own_face), raised to 1 over the hull of the template's outer lips `lips`
        (canonical) and the pasted ones (without it the feathered rim let the template's own lip
        corners and upper lip show through beside the pasted ones wherever the two mouths differ),
        and kept inside the template's face (`face`, _face_mask), except over the template's own lips
        (`lips_cover`, _lip_cover: kept with the template frame): they are face wherever the mesh's face
        outline runs. On a head turned three-quarters the mesh drew the outline through the mouth, and
        the template's open mouth showed as a dark wedge beside the pasted one (long-cameron)."""
        cover = self._lip_cover(bank, np.concatenate([lips, shape[:20]]))
        base = bank.small_mask if own is None else np.minimum(bank.small_mask, own)
        return np.maximum(np.minimum(np.maximum(base, cover), face), lips_cover)

    def _lip_cover(self, bank: MouthBank, lips: np.ndarray) -> np.ndarray:
        """The convex hull of canonical lip points at MASK_SCALE, grown by the lip cover and feathered."""
        iod, sigma = self._mask_sigma(bank)
        hull = cv2.convexHull((lips * MASK_SCALE).astype(np.float32)).reshape(-1, 2)
        mask = np.zeros(bank.small_mask.shape, np.float32)
        cv2.fillConvexPoly(mask, _grown(hull, self.options.lip_cover * iod + 2.5 * sigma), 1.0)
        return cv2.GaussianBlur(mask, (0, 0), sigma)

    def _own_face(self, bank: MouthBank, shape: np.ndarray, chosen, weights) -> np.ndarray:
        """The chosen appearances' own lower face where the warp draws it, at MASK_SCALE, feathered
        inside its outline like _face_mask: their face sides (weighted as they are blended) and the
        drawn chin."""
        sides = np.tensordot(np.asarray(weights, np.float64), bank.poses[chosen][:, _OWN_SIDES], axes=1)
        return self._feathered_inside(bank, np.concatenate([sides[:2], shape[_OWN_CHIN], sides[2:]]))

    def _face_mask(self, bank: MouthBank, to_canon: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The template's face at MASK_SCALE, feathered, which the blend mask keeps inside: a turned
        head's far cheek borders the background, which an exemplar from another view would smear
        over. The feather stays on skin, off the face's outline."""
        return self._feathered_inside(bank, apply(to_canon, landmarks[FACE_OVAL]))

    def _feathered_inside(self, bank: MouthBank, outline: np.ndarray) -> np.ndarray:
        """The closed `outline` (canonical) filled at MASK_SCALE, its feather kept inside it."""
        _, sigma = self._mask_sigma(bank)
        mask = np.zeros(bank.small_mask.shape, np.float32)
        cv2.fillPoly(mask, [_grown(outline * MASK_SCALE, -2.0 * sigma)], 1.0)
        return cv2.GaussianBlur(mask, (0, 0), sigma)

    def _compose(self, bank: MouthBank, shape, chosen, weights, to_canon, box):
        """The patch over the whole box and the bank's own blend mask (the rest-departure check)."""
        return self._warp(bank, shape, chosen, weights, to_canon, box), _to_box(bank.mask, to_canon, box)

    def _warp(self, bank: MouthBank, shape, chosen, weights, to_canon, box, within=None) -> np.ndarray:
        """The chosen appearances morphed onto `shape`, carried into the frame box `box` and blended
        (float32 BGR): over the whole box, or its part `within` (x1, y1, x2, y2 from its corner). The
        warp is computed on a grid over the whole box either way, so a part is the same pixels."""
        x1, y1, x2, y2 = box
        rw, rh = x2 - x1, y2 - y1
        step = self._warp_step(bank, to_canon)
        xs, ys = _grid_axes(x1, y1, rw, rh, step)
        sx1, sy1, sx2, sy2 = within or (0, 0, rw, rh)
        # The grid points that `within` reads, with two more each side: a resize samples the grid
        # between its points from half a step beyond them, and clamps at the grid's ends.
        c0, r0 = max(0, sx1 // step - 2), max(0, sy1 // step - 2)
        gx, gy = np.meshgrid(xs[c0:-(-sx2 // step) + 3], ys[r0:-(-sy2 // step) + 3])
        coarse = np.stack([gx.ravel(), gy.ravel()], axis=1) @ to_canon[:, :2].T + to_canon[:, 2]
        moving, fixed, values = self._controls(bank, shape, chosen)
        ctrl = np.concatenate([moving, fixed])
        source = coarse[:, None, :] + _tps_eval(ctrl, _tps_fit(moving, fixed, values), coarse).reshape(len(coarse), -1, 2)
        ox, oy = sx1 - c0 * step, sy1 - r0 * step  # `within` on the resized grid
        warped = []
        for j, idx in enumerate(chosen):
            # x and y of the sampling map in one two-channel array: one resize, one remap.
            xy = cv2.resize(source[:, j, :].reshape(*gx.shape, 2).astype(np.float32), None, fx=step, fy=step,
                            interpolation=cv2.INTER_LINEAR)[oy:oy + sy2 - sy1, ox:ox + sx2 - sx1]
            warped.append(cv2.remap(bank.patches[idx], xy, None, RESAMPLING, borderMode=cv2.BORDER_REPLICATE))
        if len(warped) == 2:  # the usual case, in one pass
            out = cv2.addWeighted(warped[0], float(weights[0]), warped[1], float(weights[1]), 0.0, dtype=cv2.CV_32F)
        else:
            out = np.zeros(warped[0].shape, np.float32)
            for w, wgt in zip(warped, weights):
                out += np.float32(wgt) * w
        return out

    def _warp_step(self, bank: MouthBank, to_canon: np.ndarray) -> int:
        """px between the warp's exact points in a frame mapped by `to_canon` (ExemplarOptions.grid_share)."""
        frame_iod = bank.iod / float(np.sqrt(abs(np.linalg.det(to_canon[:, :2]))))
        return int(min(self.options.grid_step, max(2, round(self.options.grid_share * frame_iod))))

    @staticmethod
    def _controls(bank: MouthBank, shape: np.ndarray, chosen) -> tuple[np.ndarray, np.ndarray]:
        """Control points that move (the target shape) and those that stay (the patch rim, pinned,
        and the stable landmarks), with where each chosen exemplar's content must be sampled from:
        its own shape points, the rest unmoved."""
        w, h = bank.size
        fixed = np.concatenate([_rim_points(0, 0, w, h, 5), bank.ref.astype(np.float64)])
        moving = shape.astype(np.float64)
        values = np.zeros((len(moving) + len(fixed), 2 * len(chosen)))
        for j, idx in enumerate(chosen):
            values[:len(moving), 2 * j:2 * j + 2] = bank.shapes[idx].astype(np.float64) - moving
        return moving, fixed, values

    def _match_colour(self, frame, box, out: np.ndarray, mask: np.ndarray, state: _State, within=None) -> None:
        """Bring the patch's colours to the frame's: an offset field interpolated inwards from the
        differences on the mask's rim (a normalised convolution of the rim), as a Poisson blend
        would. An enrollment shot under another light (another cut of the same person) differs in
        shading across the mouth, not only in level: one offset for the whole patch left such a
        patch grey on a warm face, its philtrum and chin lit from the other side (long-cameron).

        `out` covers the box, or only its part `within` (where the mask is above 0): the rim lies
        inside it, so the field is the same either way."""
        x1, y1, x2, y2 = box
        # Every fourth pixel each way is plenty for a field this smooth.
        m = mask[::4, ::4]
        ring = m * (1.0 - m)
        total = float(ring.sum())
        if total > 1.0:
            diff = self._rim_diff(frame, box, out, m.shape, within)
            mean = np.tensordot(ring, diff, axes=([0, 1], [0, 1])) / total
            field = mean.reshape(1, 1, 3).astype(np.float32)
            if self.options.shading_sigma > 0:
                # Far from the rim the field tends to the rim's mean difference.
                k = 0.05 * float(ring.max())
                sigma = self.options.shading_sigma * max(m.shape)
                num, den = _wide_blur(ring[..., None] * diff, ring, sigma)
                field = (num + k * field) / (den[..., None] + k)
            if state.shading is not None:
                before = cv2.resize(state.shading, (field.shape[1], field.shape[0]), interpolation=cv2.INTER_LINEAR)
                field = before + self.options.colour_follow * (field - before)
            state.shading = field
            offset = cv2.resize(field, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            out += offset if within is None else offset[within[1]:within[3], within[0]:within[2]]
        # np.clip's own loop costs twice these two.
        np.minimum(out, np.float32(255.0), out=out)
        np.maximum(out, np.float32(0.0), out=out)

    @staticmethod
    def _rim_diff(frame, box, out: np.ndarray, grid_shape, within) -> np.ndarray:
        """frame - patch on every fourth pixel of the box (zero outside `within`, where the rim's
        weight is zero anyway)."""
        x1, y1, x2, y2 = box
        if within is None:
            return frame[y1:y2:4, x1:x2:4].astype(np.float32) - out[::4, ::4]
        sx1, sy1, sx2, sy2 = within
        diff = np.zeros((*grid_shape, 3), np.float32)
        i0, j0, i1, j1 = -(-sy1 // 4), -(-sx1 // 4), -(-sy2 // 4), -(-sx2 // 4)  # grid points inside
        # Start indices computed whole: the box may begin before `frame` (a window around `within`).
        diff[i0:i1, j0:j1] = (frame[y1 + 4 * i0:y1 + sy2:4, x1 + 4 * j0:x1 + sx2:4].astype(np.float32)
                              - out[4 * i0 - sy1::4, 4 * j0 - sx1::4])
        return diff


def _closed_frames(avatar: Avatar, count: int = 5) -> list[int]:
    """Template frames with the mouth most nearly shut (spread over the clip), where the presenter's
    closed mouth should look like the frame itself; a talking template's open frames would not."""
    lm = avatar.landmarks
    gap = np.linalg.norm(lm[:, 14] - lm[:, 13], axis=1)
    pool = np.sort(np.argsort(gap, kind="stable")[:max(count, avatar.n // 5)])
    return [int(pool[i]) for i in np.linspace(0, len(pool) - 1, min(count, len(pool))).astype(int)]


def _warp_fallback(frame: np.ndarray, landmarks: np.ndarray, track: MouthTrack, k: int) -> np.ndarray:
    """The frame's mouth by the warp engine, for a frame whose enrolled patch was refused."""
    from lipsync.warp import render_mouth

    closure = float(track.closure[k]) if track.closure is not None else 0.0
    out = render_mouth(frame, landmarks, float(track.open[k]), float(track.width[k]), closure=closure)
    return blend_region(frame, *out) if out is not None else frame


def template_talks(avatar: Avatar, min_range: float = 0.03) -> bool:
    """Does the template's own mouth move (p95 - p5 of the lip gap over the inter-ocular distance)?"""
    lm = avatar.landmarks
    gap = np.linalg.norm(lm[:, 14] - lm[:, 13], axis=1) / np.maximum(1e-6, np.linalg.norm(lm[:, 33] - lm[:, 263], axis=1))
    return float(np.percentile(gap, 95) - np.percentile(gap, 5)) >= min_range


def rest_renderer(avatar: Avatar):
    """cycle index -> frame with the presenter's closed mouth, for enrolled avatars whose template
    talks; None when the template's own frames are the right idle picture."""
    bank = load_bank(avatar.path)
    if bank is None or not template_talks(avatar):
        return None
    engine, state = ExemplarEngine(), _State()
    if not engine.fits(avatar, bank):
        return None
    if not engine.options.seat_sigma:
        return lambda i: engine.render_shape(avatar, bank, i, bank.rest, state)
    # The closed mouth seated on every template frame once, not on each idle frame.
    rests = engine.seated(avatar, bank, 0, np.repeat(bank.rest[None], avatar.n, axis=0))
    return lambda i: engine.render_shape(avatar, bank, i, rests[avatar.forward_index(i)], state, seat=False)
