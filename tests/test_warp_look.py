"""How the `warp` engine's mouth looks on a real photograph (the bundled astronaut portrait, which
shows teeth at rest): a dark interior coloured from the person's own lips, never a white band;
the lower lip moved down as one piece and seen once; openings a face can plausibly show (real
speakers' inner-lip gap reaches 0.20-0.31 of the mouth width at p99); rest unchanged; a photo
that shows no teeth gets upper teeth in its own skin's colours on open vowels. Measured on
rendered pixels, no mocks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatars.compose import blend_region
from avatars.demo import write_demo_portrait
from avatars.face import CHIN, INNER_LOWER, INNER_UPPER, FaceMesher, LIPS_OUTER
from lipsync.warp import mouth_closing, mouth_opening, render_mouth

LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.imread(str(write_demo_portrait(tmp_path_factory.mktemp("warp") / "astronaut.png")))
    mesher = FaceMesher(video=False)
    try:
        landmarks = mesher.landmarks(image)
    finally:
        mesher.close()
    assert landmarks is not None
    return image, landmarks


def _render(image: np.ndarray, landmarks: np.ndarray, amount: float, width: float = 0.0) -> np.ndarray:
    frame = image.copy()
    out = render_mouth(frame, landmarks, amount, width)
    assert out is not None
    return blend_region(frame, *out)


def _mouth_width(landmarks: np.ndarray) -> float:
    xs = landmarks[LIPS_OUTER, 0]
    return float(xs.max() - xs.min())


def _skin_luminance(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Median luminance of the source's chin and cheeks beside the mouth."""
    mw = _mouth_width(landmarks)
    cx = float(landmarks[LIPS_OUTER, 0].mean())
    lip_y = float(landmarks[13, 1])
    r = int(0.08 * mw)
    centres = [(cx - 0.85 * mw, lip_y), (cx + 0.85 * mw, lip_y), (cx, (landmarks[17, 1] + landmarks[CHIN, 1]) / 2)]
    lum = [image[int(y) - r:int(y) + r, int(x) - r:int(x) + r].reshape(-1, 3) @ LUMA for x, y in centres]
    return float(np.median(np.concatenate(lum)))


def _interior(frame: np.ndarray, image: np.ndarray, landmarks: np.ndarray, amount: float) -> np.ndarray:
    """BGR pixels well inside the opened gap (columns where it is at least 5 px tall)."""
    _g, op, _px, _w = mouth_opening(image, landmarks, amount, 0.0)
    pixels = []
    for x, top, bottom in zip(op.xs, op.top, op.bottom):
        if bottom - top >= 5.0:
            pixels.append(frame[int(np.ceil(top + 1.5)):int(np.floor(bottom - 1.5)) + 1, int(x)])
    assert pixels, "the mouth did not open"
    return np.concatenate(pixels).astype(np.float32)


def _centre_profile(frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, int]:
    """Luminance down the mouth's centre line from above the upper lip to the chin (3 columns
    averaged, so single-pixel noise does not count), and the y it starts at."""
    x = int(round(float(landmarks[13, 0])))
    y0, y1 = int(landmarks[0, 1]) - 3, int(landmarks[CHIN, 1])
    return (frame[y0:y1, x - 1:x + 2].astype(np.float32) @ LUMA).mean(axis=1), y0


# The mouth's cavity is darker than this share of the skin's luminance, the tongue lit low in a wide
# opening included (it reaches about 0.6 of the skin there on the demo portrait); lips and teeth are lighter.
CAVITY = 0.7


def _dark_runs(profile: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    dark = np.concatenate([[False], profile < threshold, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(dark))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]


def test_interior_is_dark_and_coloured_from_the_lips(portrait):
    image, landmarks = portrait
    skin = _skin_luminance(image, landmarks)
    inside = _interior(_render(image, landmarks, 1.0), image, landmarks, 1.0)
    lum = inside @ LUMA
    assert np.percentile(lum, 99) < skin, (np.percentile(lum, 99), skin)  # no white band
    assert np.median(lum) < 0.35 * skin, (np.median(lum), skin)
    b, g, r = np.median(inside, axis=0)
    assert r > 1.15 * g and r > 1.1 * b, (b, g, r)  # reddish-dark, not grey

    # The colour follows the person's lips: give the astronaut bluish lips and the cavity turns bluish.
    outer = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(outer, [np.round(landmarks[LIPS_OUTER]).astype(np.int32)], 1)
    bluish = image.copy()
    bluish[outer > 0] = bluish[outer > 0][:, ::-1]
    b, g, r = np.median(_interior(_render(bluish, landmarks, 1.0), bluish, landmarks, 1.0), axis=0)
    assert b > 1.1 * r, (b, g, r)


def test_lower_lip_appears_once_and_moves_as_one_piece(portrait):
    image, landmarks = portrait
    skin = _skin_luminance(image, landmarks)
    frame = _render(image, landmarks, 1.0)
    profile, y0 = _centre_profile(frame, landmarks)
    runs = _dark_runs(profile, CAVITY * skin)
    assert len(runs) == 1, runs  # the opening, and no second gap or ghost lip edge
    # Below the opening the column is the source's lower lip and chin shifted down unchanged: no
    # stretched or repeated lip texture.
    g, op, _px, _w = mouth_opening(image, landmarks, 1.0, 0.0)
    col = int(np.argmin(np.abs(op.xs - landmarks[13, 0])))
    x, seam, bottom = int(op.xs[col]), float(op.seam[col]), float(op.bottom[col])
    lip_h = int(g.lower_out_y - seam) + 4
    src = image[int(round(seam)) + 2:int(round(seam)) + 2 + lip_h, x].astype(np.float32) @ LUMA
    out = frame[int(round(bottom)) + 2:int(round(bottom)) + 2 + lip_h, x].astype(np.float32) @ LUMA
    assert np.abs(src - out).mean() < 12.0, np.abs(src - out)
    assert y0 + runs[0][0] <= bottom <= y0 + runs[0][1] + 3, (runs, y0, bottom)


def test_rest_is_the_unchanged_source(portrait):
    image, landmarks = portrait
    assert render_mouth(image.copy(), landmarks, 0.0, 0.0) is None
    assert render_mouth(image.copy(), landmarks, 0.001, 0.01) is None


def test_opening_grows_with_the_amount_and_stays_plausible(portrait):
    image, landmarks = portrait
    skin = _skin_luminance(image, landmarks)
    mw = _mouth_width(landmarks)
    heights = []
    for amount in (0.2, 0.4, 0.6, 0.8, 1.0):
        profile, _y0 = _centre_profile(_render(image, landmarks, amount), landmarks)
        runs = _dark_runs(profile, CAVITY * skin)
        heights.append(max((b - a for a, b in runs), default=0))
        _g, op, _px, _w = mouth_opening(image, landmarks, amount, 0.0)
        gap = float((op.bottom - op.top).max())
        assert gap < 0.36 * mw, f"opening {gap:.1f} px on a {mw:.1f} px mouth"
    assert all(b >= a for a, b in zip(heights, heights[1:])) and heights[-1] > heights[0] + 3, heights
    # An open vowel opens like a real one (a dark slit of a tenth of the mouth read as murmuring).
    assert 0.2 * mw < heights[-1] < 0.36 * mw, (heights, mw)


def _closed_lips(landmarks: np.ndarray) -> np.ndarray:
    """The astronaut's mesh with the inner lips meeting: to the engine, a photo with its mouth shut."""
    closed = landmarks.copy()
    seam = (landmarks[INNER_UPPER] + landmarks[INNER_LOWER]) / 2.0
    closed[INNER_UPPER], closed[INNER_LOWER] = seam, seam
    return closed


def test_shut_photo_shows_upper_teeth_on_open_vowels(portrait, amount=0.9):
    image, landmarks = portrait
    closed = _closed_lips(landmarks)
    skin = _skin_luminance(image, landmarks)
    frame = _render(image, closed, amount)
    g, op, _px, _w = mouth_opening(image, closed, amount, 0.0)
    assert not g.teeth_at_rest
    col = int(np.argmin(np.abs(op.xs - g.in_cx)))
    x, top, bottom = int(op.xs[col]), float(op.top[col]), float(op.bottom[col])
    column = (frame[int(np.ceil(top)):int(bottom), x - 1:x + 2].astype(np.float32) @ LUMA).mean(axis=1)
    upper, lower = column[:max(1, len(column) // 4)], column[len(column) // 2:]
    # Teeth hang under the upper lip, lit like the face (not a white band), the cavity below dark.
    assert 0.65 * skin < upper.max() < 1.2 * skin, (upper, skin)
    assert lower.mean() < 0.5 * skin, (lower, skin)
    teeth = frame[int(np.ceil(top)) + 1, x - 3:x + 4].astype(np.float32).mean(axis=0)
    b, g_, r = teeth
    assert r >= g_ >= 0.8 * b, teeth  # the skin's warm hue, not grey-blue


def test_jaw_drops_with_the_lower_lip(portrait):
    """The chin moves down with the lower lip on an open vowel (not the lips alone)."""
    image, landmarks = portrait
    frame = _render(image, landmarks, 1.0)
    _g, op, _px, _w = mouth_opening(image, landmarks, 1.0, 0.0)
    drop = float((op.bottom - op.seam).max())
    x, chin = int(landmarks[CHIN, 0]), int(landmarks[CHIN, 1])
    src = image[chin - 30:chin + 10, x].astype(np.float32) @ LUMA
    out = frame[chin - 30:chin + 30, x].astype(np.float32) @ LUMA
    errors = [np.abs(out[k:k + len(src)] - src).mean() for k in range(0, 20)]
    assert int(np.argmin(errors)) >= 0.5 * drop, (errors, drop)


def _render_closed(image: np.ndarray, landmarks: np.ndarray, closure: float) -> np.ndarray:
    frame = image.copy()
    out = render_mouth(frame, landmarks, 0.0, 0.0, closure=closure)
    assert out is not None
    return blend_region(frame, *out)


def _tooth_pixels(frame: np.ndarray, landmarks: np.ndarray) -> int:
    """Bright, hardly red pixels between the photo's own inner lips (lips and skin are warm)."""
    inside = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(np.concatenate([landmarks[INNER_UPPER], landmarks[INNER_LOWER][::-1]]))
                          .astype(np.int32)], 1)
    px = frame.astype(np.float32)
    return int(((px @ LUMA > 190.0) & (px[..., 2] - px[..., 1] < 28.0) & (inside > 0)).sum())


def test_both_lips_meet_on_a_closure_over_the_photos_teeth(portrait):
    """m, b, p on a photo that smiles with its teeth: the upper lip comes down and the lower lip up,
    meeting near the middle of the photo's own gap, and the teeth are gone (the lower lip alone
    rising to the upper teeth was what the warp showed before)."""
    image, landmarks = portrait
    mesher = FaceMesher(video=False)
    try:
        shut = mesher.landmarks(_render_closed(image, landmarks, 1.0))
        half = mesher.landmarks(_render_closed(image, landmarks, 0.5))
    finally:
        mesher.close()
    width = float(np.linalg.norm(landmarks[61] - landmarks[291]))
    gap = float(landmarks[14, 1] - landmarks[13, 1])
    assert gap > 0.15 * width  # the photo's mouth is parted
    assert np.linalg.norm(shut[13] - shut[14]) < 0.10 * width, (shut[13], shut[14], width)
    half_gap = float(np.linalg.norm(half[13] - half[14]))
    assert np.linalg.norm(shut[13] - shut[14]) < half_gap < 0.95 * gap, (half_gap, gap)  # on its way
    assert shut[13, 1] - landmarks[13, 1] >= 0.2 * gap, (shut[13], landmarks[13])  # the upper lip came down
    assert landmarks[14, 1] - shut[14, 1] >= 0.2 * gap, (shut[14], landmarks[14])  # the lower lip went up
    meet = 0.5 * (shut[13, 1] + shut[14, 1])
    assert 0.3 < (meet - landmarks[13, 1]) / gap < 0.7, (meet, landmarks[13], landmarks[14])
    teeth = _tooth_pixels(image, landmarks)
    assert teeth > 100 and _tooth_pixels(_render_closed(image, landmarks, 1.0), landmarks) <= 0.15 * teeth


def test_a_closure_moves_each_lip_whole_and_leaves_corners_and_chin_as_they_were(portrait):
    """No folded or doubled lip, no torn corner, no smeared chin: above the meeting line the column
    is the photo's upper lip shifted down unchanged, below it the lower lip shifted up; beside the
    mouth corners the photo is untouched; the chin keeps its detail."""
    image, landmarks = portrait
    frame = _render_closed(image, landmarks, 1.0)
    g, cl, _amount = mouth_closing(image, landmarks, 1.0)
    col = int(np.argmin(np.abs(cl.xs - landmarks[13, 0])))
    x = int(cl.xs[col])
    lum = lambda img, a, b: img[a:b, x - 1:x + 2].astype(np.float32).mean(axis=1) @ LUMA  # noqa: E731
    upper, lower = float(cl.upper[col]), float(cl.lower[col])
    meet = int(round(float(cl.top[col])))
    down, up = int(round(cl.top[col] - upper)), int(round(lower - cl.bottom[col]))
    assert down >= 3 and up >= 3, (down, up)
    lip_h = int(g.lower_out_y - lower) + 2
    above = np.abs(lum(frame, meet - 6, meet - 1) - lum(image, meet - 6 - down, meet - 1 - down))
    below = np.abs(lum(frame, meet + 2, meet + 2 + lip_h) - lum(image, meet + 2 + up, meet + 2 + up + lip_h))
    assert above.mean() < 10.0 and below.mean() < 10.0, (above, below)
    # Beside the corners (a fifth of the mouth's width out), over the lips' rows: the photo itself.
    xl, xr = int(landmarks[61, 0] - 0.6 * g.mouth_w), int(landmarks[61, 0] - 0.2 * g.mouth_w)
    rows = slice(int(landmarks[0, 1]) - 4, int(landmarks[17, 1]) + 2)
    assert np.abs(frame[rows, xl:xr].astype(int) - image[rows, xl:xr]).mean() < 1.0
    xl, xr = int(landmarks[291, 0] + 0.2 * g.mouth_w), int(landmarks[291, 0] + 0.6 * g.mouth_w)
    assert np.abs(frame[rows, xl:xr].astype(int) - image[rows, xl:xr]).mean() < 1.0
    # The chin under the lower lip keeps its detail (a smear flattens it).
    y1, y2 = int(landmarks[17, 1]) + 4, int(landmarks[CHIN, 1]) - 2
    x1, x2 = int(landmarks[61, 0]), int(landmarks[291, 0])
    sharp = lambda img: float(cv2.Laplacian(cv2.cvtColor(img[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)  # noqa: E731
                                            .astype(np.float32), cv2.CV_32F).var())
    assert sharp(frame) > 0.8 * sharp(image), (sharp(frame), sharp(image))


def test_a_photo_with_its_lips_together_is_left_to_the_opening(portrait):
    """A closure on a photo whose lips already meet moves nothing (and the lowered opening the
    phones leave on a half-closed frame still shows, as before)."""
    image, landmarks = portrait
    closed = _closed_lips(landmarks)
    assert render_mouth(image.copy(), closed, 0.0, 0.0, closure=1.0) is None
    half = render_mouth(image.copy(), closed, 0.4, 0.0, closure=0.5)
    plain = render_mouth(image.copy(), closed, 0.4, 0.0)
    assert half is not None and np.array_equal(half[1], plain[1])
