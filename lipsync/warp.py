"""The `warp` engine: lips and jaw deformed from the avatar's landmarks, no neural weights.

Per frame, a displacement field over the lower face moves the lower lip, chin and jaw down as
one piece (fading out into the neck), lifts the upper lip a little and spreads or rounds the
corners. The gap opens as far as real speakers' do on open vowels (about a third of the mouth's
width) and is painted as a mouth interior whose colours come from the person's own lips and
skin: the lip's hue in deep shadow, darkest just under the upper lip, the tongue lit low in a
wide opening, and upper teeth hanging from the upper lip in the skin's own hue and light (a
portrait that already shows teeth keeps its own, the upper ones staying with the upper lip).

On m, b and p (the closures the phones of the fleet's own speech give, `MouthTrack.closure`) both
lips move to meet: the upper lip down and the lower lip with the jaw up, sliding over whatever the
photo shows between them (its own teeth in a smile), so a mouth that is parted in the photo shuts.

The field is built in destination coordinates around the *moved* lip edges, so every output
pixel reads the source exactly once: above the opening the upper lip, below it the lower lip and
jaw shifted as a whole, inside it the (dark) line between the lips. A backward field that is
discontinuous at the source seam instead makes the pixels just under the seam read content a
whole opening higher, sampling lip texture twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import cv2
import numpy as np

from avatars.deform import Box, clip_box, edge_taper, smoothstep, warp_region
from avatars.face import CHIN, INNER_LOWER, INNER_UPPER, JAW, LIPS_OUTER, NOSE_TIP

log = logging.getLogger(__name__)

# Only when the lips and skin cannot be sampled (mouth too small or off-frame).
FALLBACK_LIP_BGR = np.array([95, 95, 150], np.float32)
FALLBACK_SKIN_BGR = np.array([140, 160, 200], np.float32)
LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights


@dataclass(frozen=True)
class WarpOptions:
    strength: float = 1.0  # scales the opening; 0 disables motion
    # Widest gap as a share of mouth width. Real speakers' inner-lip gap over mouth width (face mesh,
    # real-talk-2/-5, pd-tedlieu, long-cameron): p95 0.15-0.26, p99 0.20-0.31; 0.20 read as a murmur.
    max_open: float = 0.34
    # Opening = amount ** curve: quiet and closing syllables stay small, open vowels reach the top.
    open_curve: float = 1.4
    teeth: bool = True  # a shaded upper dentition in the face's colours when the mouth opens

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 3.0:
            raise ValueError("strength must be within 0..3")
        if not 0.0 < self.max_open <= 0.5:
            raise ValueError("max_open must be within 0..0.5")


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


@dataclass(frozen=True)
class Closing:
    """The lips moved towards each other (m, b, p), per column of the warp box."""

    xs: np.ndarray  # [w] column x
    upper: np.ndarray  # [w] the source's inner upper lip edge
    lower: np.ndarray  # [w] the source's inner lower lip edge
    top: np.ndarray  # [w] where the upper lip's edge moves to
    bottom: np.ndarray  # [w] where the lower lip's edge moves to; equals top when shut


@dataclass(frozen=True)
class Opening:
    """The gap between the lips in frame coordinates, per column of the warp box."""

    xs: np.ndarray  # [w] column x
    seam: np.ndarray  # [w] the line between the lips in the source
    top: np.ndarray  # [w] lower edge of the (lifted) upper lip
    bottom: np.ndarray  # [w] upper edge of the (lowered) lower lip; equals top outside the mouth
    half_w: float  # half width of the opening (corners pulled in or spread out)


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
        in_cx=float(up[0, 0] + up[-1, 0]) / 2.0, in_half=max(4.0, abs(float(up[-1, 0] - up[0, 0])) / 2.0),
        seam_x=seam[order, 0], seam_y=seam[order, 1],
        upper_in=up, lower_in=lo, lower_out_y=float(landmarks[17, 1]), chin_y=chin_y, nose_y=nose_y,
        jaw_half_w=max(8.0, (float(jaw[:, 0].max()) - float(jaw[:, 0].min())) / 2.0),
        teeth_at_rest=bool(float(landmarks[14, 1] - landmarks[13, 1]) > 0.06 * max(8.0, xr - xl)),
    )


def split_at_teeth(frame: np.ndarray, g: MouthGeometry) -> MouthGeometry:
    """For a portrait showing teeth at rest, part the lips at the lower edge of the upper teeth
    rather than halfway between the inner lips, so the upper teeth stay whole with the upper lip
    and only what is below that edge (lower teeth, lower lip) moves with the jaw."""
    up, lo = g.upper_in[2:-2], g.lower_in[2:-2]  # the middle, where teeth show
    ts = np.linspace(0.3, 1.0, 15, dtype=np.float32)[None, :]
    # Bilinear samples along each upper-to-lower inner-lip segment.
    mx = (up[:, :1] + ts * (lo[:, :1] - up[:, :1])).astype(np.float32)
    my = (up[:, 1:] + ts * (lo[:, 1:] - up[:, 1:])).astype(np.float32)
    x0, y0, x1, y1 = clip_box((int(mx.min()) - 1, int(my.min()) - 1, int(mx.max()) + 2, int(my.max()) + 2),
                              frame.shape)
    lum = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    profiles = cv2.remap(lum, mx - x0, my - y0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    found = []
    for profile, height in zip(profiles, lo[:, 1] - up[:, 1]):
        # Teeth are the bright part of the gap; without a clear contrast this column says nothing.
        if height < 4.0 or profile.max() - profile.min() < 20.0:
            continue
        half = (profile.max() + profile.min()) / 2.0
        i = int(np.nonzero(profile >= half)[0][-1])
        if i + 1 < profile.size:
            # Sub-sample crossing, so the split does not jump between frames of a video avatar.
            found.append(float(ts[0, i] + (profile[i] - half) / max(1e-3, profile[i] - profile[i + 1])
                               * (ts[0, i + 1] - ts[0, i])))
    if len(found) < 3:
        # Parted lips with no bright band between them show no teeth: paint a dentition instead.
        return replace(g, teeth_at_rest=False)
    share = float(np.clip(np.median(found), 0.5, 0.9))
    seam = g.upper_in + share * (g.lower_in - g.upper_in)
    order = np.argsort(seam[:, 0])
    return replace(g, seam_x=seam[order, 0], seam_y=seam[order, 1])


def _corner_scale(g: MouthGeometry, open_px: float, width: float) -> float:
    """Horizontal scale about the mouth centre: spread vowels widen, rounded ones and a dropping
    jaw narrow the mouth."""
    return 0.07 * width - 0.5 * open_px / g.mouth_w


def opening(g: MouthGeometry, open_px: float, width: float) -> Opening:
    """Where the lips part. The profile is closed at the corners and fullest in the middle; spread
    vowels open a flatter, lower slit, rounded ones a rounder, narrower gap."""
    xs = np.arange(g.box[0], g.box[2], dtype=np.float32)
    seam = np.interp(xs, g.seam_x, g.seam_y).astype(np.float32)
    half = g.in_half * (1.0 + _corner_scale(g, open_px, width))
    u = (xs - g.in_cx) / half
    spread, rounded = min(max(width, 0.0), 1.0), min(max(-width, 0.0), 1.0)
    profile = np.clip(1.0 - u * u, 0.0, 1.0) ** (0.8 - 0.25 * spread + 0.2 * rounded)
    gap = open_px * (1.0 - 0.25 * spread - 0.05 * rounded) * profile
    # The jaw does the opening; the upper lip rises only a little (an eighth of the gap).
    return Opening(xs=xs, seam=seam, top=seam - 0.125 * gap, bottom=seam + 0.875 * gap, half_w=half)


def _vertical_field(g: MouthGeometry, op: Opening) -> np.ndarray:
    """dy over the box, in destination coordinates around the moved lip edges."""
    ys = np.arange(g.box[1], g.box[3], dtype=np.float32)[:, None]
    top, bottom, seam = op.top[None, :], op.bottom[None, :], op.seam[None, :]
    lift = seam - top
    span = max(2.0, float(seam.mean()) - g.nose_y)
    up = -lift * (1.0 - smoothstep((top - ys) / span)) ** 2
    # Below the opening the lower lip moves with its edge, the jaw below it as a whole; the chin
    # in the middle moves as far as the lip. The blend is long enough never to fold the image.
    lip_drop = bottom - seam
    jaw_drop = float(lip_drop.max()) * np.exp(-(((op.xs - g.cx) / (g.jaw_half_w * 0.85)) ** 4))[None, :]
    lip_h = max(2.0, g.lower_out_y - float(seam.mean()))
    blend = max(1.6 * lip_h, 2.5 * float(np.abs(jaw_drop - lip_drop).max()))
    t = smoothstep((ys - bottom) / blend)
    neck = max(4.0, 0.55 * (g.chin_y - g.nose_y))
    down = (lip_drop * (1.0 - t) + jaw_drop * t) * (1.0 - smoothstep((ys - g.chin_y - jaw_drop) / neck))
    # Inside the gap read the line between the lips itself: no lip texture is stretched into it.
    gap = ys - seam
    return np.where(ys <= top, up, np.where(ys >= bottom, down, gap)).astype(np.float32)


def _fields(g: MouthGeometry, op: Opening, open_px: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    dy = _vertical_field(g, op)
    xs = op.xs[None, :]
    ys = np.arange(g.box[1], g.box[3], dtype=np.float32)[:, None]
    seam = op.seam[None, :]
    lip_h = max(2.0, g.lower_out_y - float(seam.mean()))
    bump = np.exp(-((xs - g.cx) / (0.9 * g.mouth_w)) ** 2 - ((ys - seam) / (1.4 * lip_h)) ** 2)
    dx = _corner_scale(g, open_px, width) * (xs - g.cx) * bump
    taper = edge_taper(g.box)
    return (dx * taper).astype(np.float32), (dy * taper).astype(np.float32)


# Where the lips meet on a closure, as a share of the photo's own inner-lip gap below its upper lip:
# near the middle, so both lips visibly move (the upper lip alone reads as a sneer, the lower lip
# alone stops at the upper teeth of a smiling photo, which is what the warp showed before).
MEET_SHARE = 0.5
# Shut lips show a line darker than either lip where they meet (the shadow between them): at its
# centre the line is this much of the way from the pixels to the lip's colour at this share of its level.
MEET_LINE_ALPHA = 0.45
MEET_LINE_LEVEL = 0.45
# A photo whose inner lips are nowhere further apart than this share of the mouth's width has its
# mouth shut already: closures leave it to the opening (lowered by the phones) as before.
CLOSED_GAP = 0.02
# The mesh's inner lip corners sit a little inside where a parted mouth's dark corners end: the
# closure reaches this much further out from the mouth's centre, or those corners stay dark.
CORNER_REACH = 1.12


def closing(g: MouthGeometry, amount: float) -> Closing:
    """Both inner lip edges moved `amount` (0..1) of the way to their meeting line."""
    xs = np.arange(g.box[0], g.box[2], dtype=np.float32)
    lines = []
    for points in (g.upper_in, g.lower_in):
        order = np.argsort(points[:, 0])
        reach = g.in_cx + CORNER_REACH * (points[order, 0] - g.in_cx)
        lines.append(np.interp(xs, reach, points[order, 1]).astype(np.float32))
    upper, lower = lines
    # Both lines share the inner corners, so the gap (and every move) is 0 at and beyond them.
    gap = np.maximum(lower - upper, 0.0)
    amount = float(np.clip(amount, 0.0, 1.0))
    return Closing(xs=xs, upper=upper, lower=lower, top=upper + amount * MEET_SHARE * gap,
                   bottom=lower - amount * (1.0 - MEET_SHARE) * gap)


def _closing_fields(g: MouthGeometry, cl: Closing) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dy of the upper lip, dy of the lower lip, the weight of each) over the box, in destination
    coordinates around the moved lip edges: above the moved upper edge the upper lip shifted down
    (the skin up to the nose stretching), below the moved lower edge the lower lip shifted up as one
    piece with the chin following less, and between them (a partial closure) the source itself,
    unmoved: the lips slide over the teeth, which stay where they are."""
    ys = np.arange(g.box[1], g.box[3], dtype=np.float32)[:, None]
    top, bottom = cl.top[None, :], cl.bottom[None, :]
    down_by, up_by = (cl.top - cl.upper)[None, :], (cl.bottom - cl.lower)[None, :]
    span = max(4.0, float(cl.upper.mean()) - g.nose_y)
    upper = down_by * (1.0 - smoothstep((top - ys) / span))
    lip_h = max(2.0, g.lower_out_y - float(cl.lower.mean()))
    chin = max(4.0, g.chin_y - g.lower_out_y)
    lower = up_by * (1.0 - smoothstep((ys - bottom - lip_h) / (1.5 * chin)))
    # Pixel coverage of each lip at its moved edge: the edges are anti-aliased by blending the three
    # readings (a ramp in the displacement instead would read the teeth between the lips), and where
    # the lips meet the two weights sum to one.
    w_up = np.clip(top - ys + 0.5, 0.0, 1.0)
    w_lo = np.clip(ys - bottom + 0.5, 0.0, 1.0)
    return upper.astype(np.float32), lower.astype(np.float32), w_up.astype(np.float32), w_lo.astype(np.float32)


def _paint_meeting_line(region: np.ndarray, g: MouthGeometry, cl: Closing, amount: float,
                        lip: np.ndarray) -> np.ndarray:
    """Darken the line where the lips meet (a shut mouth shows one); returns the box-sized alpha."""
    ys = np.arange(g.box[1], g.box[3], dtype=np.float32)[:, None]
    meet = (0.5 * (cl.top + cl.bottom))[None, :]
    gap = (cl.lower - cl.upper)[None, :]
    # Only where the lips actually close, fading towards the corners with the photo's own gap.
    strength = np.clip(gap / (0.04 * g.mouth_w), 0.0, 1.0) * smoothstep((amount - 0.5) / 0.5)
    alpha = np.exp(-((ys - meet) / max(0.7, 0.012 * g.mouth_w)) ** 2) * strength * MEET_LINE_ALPHA
    dark = (lip * MEET_LINE_LEVEL).astype(np.float32)
    region[:] = region * (1.0 - alpha[..., None]) + dark * alpha[..., None]
    return alpha.astype(np.float32)


def _typical_colour(pixels: np.ndarray) -> np.ndarray | None:
    """Median colour of the mid-luminance pixels: specular highlights and deep shadows dropped."""
    if len(pixels) < 12:
        return None
    lum = pixels @ LUMA
    lo, hi = np.percentile(lum, (15, 85))
    keep = pixels[(lum >= lo) & (lum <= hi)]
    return np.median(keep if len(keep) >= 6 else pixels, axis=0).astype(np.float32)


def sample_palette(frame: np.ndarray, landmarks: np.ndarray, g: MouthGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The person's own lip colour (between the outer and inner lip contours) and skin colour
    (cheeks beside the mouth and the chin), BGR float32."""
    outer = landmarks[LIPS_OUTER]
    box = clip_box((int(outer[:, 0].min()) - 2, int(outer[:, 1].min()) - 2,
                    int(outer[:, 0].max()) + 3, int(outer[:, 1].max()) + 3), frame.shape)
    off = np.array(box[:2], np.float32)
    mask = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(outer - off).astype(np.int32)], 1)
    inner = np.concatenate([landmarks[INNER_UPPER], landmarks[INNER_LOWER][::-1]])
    cv2.fillPoly(mask, [np.round(inner - off).astype(np.int32)], 0)
    if g.mouth_w > 40:
        mask = cv2.erode(mask, np.ones((3, 3), np.uint8))  # contour pixels are half skin
    lip = _typical_colour(frame[box[1]:box[3], box[0]:box[2]][mask > 0].astype(np.float32))
    r = max(2, int(0.07 * g.mouth_w))
    seam_y = float(np.mean(g.seam_y))
    side = 0.5 * g.mouth_w + 0.35 * max(0.0, g.jaw_half_w - 0.5 * g.mouth_w)
    patches = []
    for x, y in ((g.cx - side, seam_y), (g.cx + side, seam_y), (g.cx, (g.lower_out_y + g.chin_y) / 2.0)):
        x1, y1, x2, y2 = clip_box((int(x) - r, int(y) - r, int(x) + r + 1, int(y) + r + 1), frame.shape)
        if x2 > x1 and y2 > y1:
            patches.append(frame[y1:y2, x1:x2].reshape(-1, 3))
    skin = _typical_colour(np.concatenate(patches).astype(np.float32)) if patches else None
    if lip is None or skin is None:
        log.debug("lip/skin colour not sampled (mouth %.0f px wide); using defaults", g.mouth_w)
    return (FALLBACK_LIP_BGR if lip is None else lip), (FALLBACK_SKIN_BGR if skin is None else skin)


def _tint(bgr: np.ndarray, saturation: float) -> np.ndarray:
    """The hue of `bgr` at luminance 1, its colourfulness scaled by `saturation`."""
    ratio = bgr / max(1.0, float(bgr @ LUMA))
    ratio = np.maximum(1.0 + (ratio - 1.0) * saturation, 0.05)
    return (ratio / float(ratio @ LUMA)).astype(np.float32)


def _interior_colour(g: MouthGeometry, op: Opening, ys: np.ndarray, cols: slice, lip: np.ndarray,
                     skin: np.ndarray, teeth: float) -> np.ndarray:
    """Cavity colour for rows `ys` (frame y, [h,1]) and the box columns `cols`: the lip's hue in
    deep shadow, darkest just under the upper lip and towards the middle, a little lighter low in
    a wide opening (the tongue), and when `teeth` > 0 a faint shaded band under the upper lip."""
    top, bottom = op.top[None, cols], op.bottom[None, cols]
    gap = np.maximum(bottom - top, 1.0)
    v = np.clip((ys - top) / gap, 0.0, 1.0)
    across = np.sqrt(np.clip(1.0 - ((op.xs[None, cols] - g.in_cx) / op.half_w) ** 2, 0.0, 1.0))
    # Lit by the same light as the face: levels follow the face's own brightness.
    ref = 0.5 * (float(lip @ LUMA) + float(skin @ LUMA))
    tint = _tint(lip, 1.5)
    # Thin gaps are all shadow; wider ones let some light onto the rim and the tongue.
    thin = np.clip(1.0 - gap / (0.07 * g.mouth_w), 0.0, 1.0)
    shade = np.maximum(across ** 0.7 * np.clip(1.0 - ((v - 0.3) / 0.75) ** 2, 0.0, 1.0), thin)
    level = ref * (0.27 - 0.18 * shade)
    # The tongue fills the lower part of a wide opening: a lit, rounded hump, never a black hole.
    wide = np.clip(gap / (0.12 * g.mouth_w) - 0.3, 0.0, 1.0)
    tongue = smoothstep((v - 0.3) / 0.5) * across ** 1.2 * wide
    level = level + ref * TONGUE_LIGHT * tongue
    colour = level[..., None] * tint
    # The lower incisors' edges just inside the lower lip of a wide opening: a faint, soft band in
    # the teeth's ivory, mostly hidden by the lip (a cavity with no lower teeth reads as a hole).
    lower = np.exp(-((v - 0.86) / 0.08) ** 2) * smoothstep((across - 0.35) / 0.4) * wide
    ivory = min(float(skin @ LUMA), 235.0) * 0.55 * _tint(skin, 0.6)
    a = (LOWER_TEETH * lower)[..., None]
    colour = colour * (1.0 - a) + ivory * a
    if teeth > 0.0:
        tooth, a = _dentition(g, op, ys, cols, gap, across, skin)
        a = (teeth * a)[..., None]
        colour = colour * (1.0 - a) + tooth * a
    return colour


# How much of the face's light reaches the tongue low in a wide opening, and how much of the lower
# teeth's edges shows there (before: 0.17 and none, a wide opening read as a black hole). Chosen by
# eye on the demo portrait and avatar-sun at 3 s (bench/figures/issue-15/photo-interior-*). A
# lighter tongue (0.28-0.36) looked better still, but the person check's lip sampler then read it as
# lip: the portrait speaking by warp was refused as a sample of its own photo (lip contrast 15.0-16.8
# against the bound 15).
TONGUE_LIGHT = 0.22
LOWER_TEETH = 0.6

# Gaps between the upper teeth seen from the front, in mouth widths from the centre, with how dark
# each reads: the central incisors, the laterals, the canines (narrower and fainter as the arch
# turns away). Even, sharp seams make a comb; soft, fading ones read as teeth.
TOOTH_GAPS = ((0.0, 1.0), (0.105, 0.7), (0.19, 0.45), (0.26, 0.3))


def _dentition(g: MouthGeometry, op: Opening, ys: np.ndarray, cols: slice, gap: np.ndarray,
               across: np.ndarray, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper teeth under the upper lip, for a photo that shows none: (colour [h,w,3], alpha [h,w]).

    Ivory from the skin's own hue and lit like it: brightest on the front incisors, falling into
    shadow under the lip, towards the corners and between the teeth; a soft lower edge. They hang
    from the upper lip (the upper jaw does not move), so they show more as the jaw drops."""
    top = op.top[None, cols]
    xs = op.xs[None, cols]
    height = np.minimum(0.36 * gap, 0.09 * g.mouth_w) + 0.5
    d = (ys - top) / height
    # Incisor tips are a little longer in the middle than at the canines.
    edge = 1.0 - 0.12 * (1.0 - across)
    # From right under the lip (no dark line between lip and teeth) to a soft lower edge.
    alpha = smoothstep((edge - d) / 0.3) * smoothstep(d / 0.05 + 0.8) * smoothstep((across - 0.08) / 0.45)
    u = np.abs(xs - g.in_cx) / g.mouth_w
    seams = sum(w * np.exp(-((u - c) / 0.01) ** 2) for c, w in TOOTH_GAPS)
    light = (0.66 + 0.34 * across ** 1.5) * (0.78 + 0.22 * smoothstep(d / 0.4)) * (1.0 - 0.12 * seams)
    skin_l = float(skin @ LUMA)
    tooth = (min(1.0 * skin_l, 235.0) * light)[..., None] * _tint(skin, 0.6)
    return tooth, alpha


def _paint_interior(region: np.ndarray, g: MouthGeometry, op: Opening, lip: np.ndarray, skin: np.ndarray,
                    teeth: float) -> np.ndarray:
    """Paint the mouth interior into `region` (float32 BGR, box-sized); returns the box-sized alpha."""
    y0 = g.box[1]
    h, w = region.shape[:2]
    alpha_box = np.zeros((h, w), np.float32)
    cols = np.nonzero(op.bottom - op.top > 0.05)[0]
    if cols.size == 0:
        return alpha_box
    pad = 3
    c1, c2 = max(0, int(cols[0]) - pad), min(w, int(cols[-1]) + 1 + pad)
    r1 = max(0, int(np.floor(op.top[c1:c2].min())) - y0 - pad)
    r2 = min(h, int(np.ceil(op.bottom[c1:c2].max())) - y0 + 1 + pad)
    if r2 <= r1:
        return alpha_box
    ys = np.arange(r1 + y0, r2 + y0, dtype=np.float32)[:, None]
    sl = slice(c1, c2)
    # Exact pixel coverage of the gap along y; where the gap is thinner than a pixel (the corners)
    # coverage thins out with it instead of stepping.
    cover = np.clip(np.minimum(ys + 0.5, op.bottom[None, sl]) - np.maximum(ys - 0.5, op.top[None, sl]), 0.0, 1.0)
    alpha = cv2.GaussianBlur(cover, (0, 0), max(0.5, 0.011 * g.mouth_w))
    colour = _interior_colour(g, op, ys, sl, lip, skin, teeth)
    a = alpha[..., None]
    patch = region[r1:r2, c1:c2]
    patch[:] = patch * (1.0 - a) + colour * a
    alpha_box[r1:r2, c1:c2] = alpha
    return alpha_box


def mouth_opening(frame: np.ndarray, landmarks: np.ndarray, open_amount: float, width: float,
                  opts: WarpOptions = WarpOptions()) -> tuple[MouthGeometry, Opening, float, float]:
    """The geometry and the gap between the lips exactly as `render_mouth` draws them for one
    mouth state, with the opening in pixels and the effective width (for tests and tools)."""
    g = geometry(landmarks, frame.shape)
    if g.teeth_at_rest:
        g = split_at_teeth(frame, g)
    open_px = float(np.clip(open_amount, 0.0, 1.0)) ** opts.open_curve * opts.strength * opts.max_open * g.mouth_w
    width = float(width) * opts.strength
    return g, opening(g, open_px, width), open_px, width


def mouth_closing(frame: np.ndarray, landmarks: np.ndarray, closure: float,
                  opts: WarpOptions = WarpOptions()) -> tuple[MouthGeometry, Closing, float]:
    """The geometry and the lips' moved edges exactly as `render_mouth` draws a closure, with the
    closure's effective amount (for tests and tools)."""
    g = geometry(landmarks, frame.shape)
    amount = float(np.clip(closure * opts.strength, 0.0, 1.0))
    return g, closing(g, amount), amount


def _render_closing(frame: np.ndarray, landmarks: np.ndarray, closure: float, width: float,
                    opts: WarpOptions) -> tuple[Box, np.ndarray, np.ndarray] | None:
    g, cl, amount = mouth_closing(frame, landmarks, closure, opts)
    if float((cl.lower - cl.upper).max(initial=0.0)) < CLOSED_GAP * g.mouth_w:
        return None  # the photo's lips already meet: nothing to close
    width = float(width) * opts.strength
    taper = edge_taper(g.box)
    up_dy, lo_dy, w_up, w_lo = _closing_fields(g, cl)
    up_dy, lo_dy = up_dy * taper, lo_dy * taper
    xs = cl.xs[None, :]
    ys = np.arange(g.box[1], g.box[3], dtype=np.float32)[:, None]
    lip_h = max(2.0, g.lower_out_y - float(cl.lower.mean()))
    meet = (0.5 * (cl.top + cl.bottom))[None, :]
    bump = np.exp(-((xs - g.cx) / (0.9 * g.mouth_w)) ** 2 - ((ys - meet) / (1.4 * lip_h)) ** 2)
    dx = (_corner_scale(g, 0.0, width) * (xs - g.cx) * bump * taper).astype(np.float32)
    w_mid = np.clip(1.0 - w_up - w_lo, 0.0, 1.0)
    region = np.zeros((*dx.shape, 3), np.float32)
    for dy, weight in ((up_dy, w_up), (lo_dy, w_lo), (np.zeros_like(dx), w_mid)):
        rows = np.flatnonzero(weight.max(axis=1) > 0.0)
        if rows.size:  # each reading only over the rows it shows in
            r1, r2 = int(rows[0]), int(rows[-1]) + 1
            box = (g.box[0], g.box[1] + r1, g.box[2], g.box[1] + r2)
            region[r1:r2] += weight[r1:r2, :, None] * warp_region(frame, box, dx[r1:r2], dy[r1:r2])
    # How far each pixel's reading moved (the two lips' moves are opposite: never summed signed).
    moved = w_up * np.abs(up_dy) + w_lo * np.abs(lo_dy)
    mask = np.clip(np.hypot(dx, moved) * 2.0, 0.0, 1.0)
    lip, _skin = sample_palette(frame, landmarks, g)
    mask = np.maximum(mask, _paint_meeting_line(region, g, cl, amount, lip))
    mask = cv2.GaussianBlur(mask, (5, 5), 0) * edge_taper(g.box)
    return g.box, np.clip(region, 0, 255).astype(np.uint8), mask


def render_mouth(frame: np.ndarray, landmarks: np.ndarray, open_amount: float, width: float,
                 opts: WarpOptions = WarpOptions(), closure: float = 0.0) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """The warped lower-face region of `frame` for one mouth state, with its blend mask (float32
    0..1), or None when the mouth is at rest (the source frame is shown unchanged).

    `closure` (0..1, the phones' m, b and p: `MouthTrack.closure`) brings the lips together from
    wherever the photo has them; it takes the place of the opening, which the phones already
    lowered by as much on those frames (lipsync.visemes.with_phones)."""
    if closure * opts.strength > 0.01:
        closed = _render_closing(frame, landmarks, closure, width, opts)
        if closed is not None:
            return closed
        # A photo with its lips together closes by not opening: the lowered opening, as before.
    g, op, open_px, width = mouth_opening(frame, landmarks, open_amount, width, opts)
    if open_px < 0.5 and abs(width) < 0.05:
        return None
    dx, dy = _fields(g, op, open_px, width)
    region = warp_region(frame, g.box, dx, dy).astype(np.float32)
    mask = np.clip(np.hypot(dx, dy) * 2.0, 0.0, 1.0)
    if open_px >= 0.5:
        lip, skin = sample_palette(frame, landmarks, g)
        # Upper teeth show as soon as the lips part beyond a slit; a photo that shows its own keeps them.
        teeth = float(np.clip((open_px / g.mouth_w - 0.04) / 0.08, 0.0, 1.0)) \
            if opts.teeth and not g.teeth_at_rest else 0.0
        mask = np.maximum(mask, _paint_interior(region, g, op, lip, skin, teeth))
    mask = cv2.GaussianBlur(mask, (5, 5), 0) * edge_taper(g.box)
    return g.box, np.clip(region, 0, 255).astype(np.uint8), mask
