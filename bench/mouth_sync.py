"""Does the mouth in a talking-avatar video open and close with the syllables of its audio?

    python -m bench.mouth_sync VIDEO [--audio WAV] [--reference VIDEO_OR_DIR_OR_IMAGE] [--json-out FILE]
                                     [--max-lag 2] [--ssim-stride 1]

Prints one JSON object. A "talking" video that is really a still photo (perhaps with a flickering
brightness) scores r = 0 and verdict "static_mouth"; a mouth that follows the speech scores a clearly
positive r and is closed in the pauses. Audio defaults to the video's own track.

Definitions (per video frame; audio is decoded to mono 16 kHz through core.media):

- face scale: distance in pixels between the outer eye corners (face-mesh landmarks 33 and 263).
  Unlike the mouth width (78-308) it does not change when the mouth opens.
- opening: distance between the inner-lip midpoints (13 upper, 14 lower) / face scale; NaN where
  no face is found. Face mesh (refine_landmarks off) never reports 0 for shut lips: the shut mouth
  of avatar-sun.mp4 measures 0.070-0.111 over its idle motion (p5 0.080, p95 0.100), the smiling
  astronaut with teeth showing 0.11-0.13, the test fixture's widest warped mouth ~0.26-0.28.
- speech envelope: RMS of the samples in each frame's window [i/fps, (i+1)/fps) in dB, clipped to
  the 40 dB below the 95th-percentile frame level (noise in the pauses must not add variance a mouth
  cannot follow), mapped to 0..1 and smoothed with a [1/4, 1/2, 1/4] kernel.
- silence: a frame is silent when its level is more than 30 dB below the 95th-percentile frame
  level, or below -55 dBFS; only runs lasting >= 0.5 s count. `analyze` also drops `max_lag` frames
  at both ends of each run: a mouth may finish closing a frame or two after the sound stops.
  speech_frames are the frames that are not silent by level at all (no minimum duration).
- r, lag_frames: the largest Pearson r of opening[t] vs envelope[t - lag], lag in -2..+2 (positive:
  the mouth follows the audio), over frames with a face; 0 when either series is constant.
  r is forced to 0 when the mouth does not move: motion_range (opening p95 - p5) < 0.03, i.e. about
  2 px on a face with 75 px between the eye corners; `r_raw` keeps the unforced value. Reason: face
  mesh landmarks jitter by a fraction of a pixel with the brightness, and Pearson r scales any
  amplitude up. A still portrait whose brightness follows the speech (gain 1 + 0.12..0.15 x envelope)
  has motion_range <= 0.008 yet r_raw 0.38-0.58; a shut mouth with idle head motion spans 0.021; the
  positive fixtures 0.14-0.20.
- r_syllable: the same after subtracting a centred 0.5 s moving average from both series, so only
  syllable-rate (> ~2 Hz) movement counts and merely being open during speech and shut in the pauses
  does not. Simulated independent 20 s speech-like signals: r up to ~0.4, r_syllable up to ~0.2.
- closed: opening <= rest + 0.04, rest = the 5th percentile of the video's own openings (its shut
  state), capped at 0.15 so a mouth that never shuts is not taken for a shut one. 0.04 is about twice
  the idle spread of a shut mouth (p95 - p5 = 0.021 on avatar-sun). closed_share_in_silence is the
  share of silent frames (with a face) whose mouth is closed; closed_share_in_speech likewise.
- ssim_outside_mask: mean SSIM (skimage structural_similarity, grayscale, 7x7 window, full map)
  between output frame i and reference frame i mod len(reference), averaged over the pixels OUTSIDE
  the reference frame's lower-face region: the convex hull of the jaw line from nose-tip height down
  (132 ... 152 ... 361), the nose base and the lips, dilated by 0.3 x face scale, which reaches to just
  under the lower eyelids and well below the chin. A lip-sync renderer may only change that region.
  One H.264 (crf 16, yuv420p) round trip of an unchanged frame already costs ~0.99 (0.987-0.994 on the
  test media) and shifts mean gray by ~1.2-1.9 levels. SSIM is built to forgive brightness, so
  outside_luma_shift_mean/max (|mean gray difference| outside the region) is what exposes a flicker.
- verdict: "no_face" (face in < 50 % of frames), "static_mouth" (motion_range < 0.03), "unsynced"
  (r < 0.3) or "synced". A quick reading for dashboards; the numbers are the evidence.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from bench.common import emit
from core.media import decode_audio, probe

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 33, 263

ENVELOPE_RANGE_DB = 40.0
SILENCE_REL_DB = 30.0
SILENCE_ABS_DBFS = -55.0
MIN_SILENCE_S = 0.5
REST_PERCENTILE = 5.0
REST_CAP = 0.15
CLOSED_MARGIN = 0.04
MIN_MOTION = 0.03
SYLLABLE_WINDOW_S = 0.5
MASK_MARGIN = 0.3
MAX_LAG = 2
SYNCED_R = 0.3
MIN_FACE_SHARE = 0.5

# The jaw line from cheek to cheek at nose-tip height (132 ... 152 ... 361), the nose base
# (2, 98, 327, 64, 294) and the outer lips: everything a mouth/jaw renderer may touch lies inside
# their hull. Starting at nose-tip height, not higher, keeps the eyes outside even after dilation.
LOWER_FACE_LANDMARKS = (
    132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
    2, 98, 327, 64, 294, 61, 291, 0, 17, 37, 267, 84, 314, 181, 405,
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------------------- media

def iter_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """BGR uint8 frames one at a time, so a long video never has to sit in memory."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="bgr24")


def video_fps(path: str | Path) -> float:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError(f"{path}: the video stream has no frame rate")
    return float(rate)


def video_frame_count(path: str | Path) -> int:
    """Frames in the video stream: the container's count when it has one, else counted by decoding."""
    import av

    with av.open(str(path)) as container:
        declared = container.streams.video[0].frames
    return int(declared) if declared else sum(1 for _ in iter_video_frames(path))


def read_video_frames(path: str | Path) -> tuple[list[np.ndarray], float]:
    return list(iter_video_frames(path)), video_fps(path)


def frame_files(path: str | Path) -> list[Path]:
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no frame images")
    return files


def read_image(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image


def read_frame_dir(path: str | Path) -> list[np.ndarray]:
    return [read_image(p) for p in frame_files(path)]


def iter_reference(reference: str | Path | np.ndarray | Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """A video file, a directory of frame images, one image file or BGR array(s) -> BGR frames."""
    if isinstance(reference, np.ndarray):
        yield from ([reference] if reference.ndim == 3 else reference)
    elif isinstance(reference, (str, Path)):
        path = Path(reference)
        if path.is_dir():
            yield from (read_image(p) for p in frame_files(path))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield read_image(path)
        else:
            yield from iter_video_frames(path)
    else:
        yield from reference


def reference_length(reference: str | Path | np.ndarray | Sequence[np.ndarray]) -> int:
    if isinstance(reference, np.ndarray):
        return 1 if reference.ndim == 3 else len(reference)
    if isinstance(reference, (str, Path)):
        path = Path(reference)
        if path.is_dir():
            return len(frame_files(path))
        return 1 if path.suffix.lower() in IMAGE_SUFFIXES else video_frame_count(path)
    return len(reference)


def load_reference(reference: str | Path | np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return list(iter_reference(reference))


def read_audio(path_or_video: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    return decode_audio(Path(path_or_video), sr)


# ------------------------------------------------------------------------------------- landmarks

class FaceLandmarker:
    """One mediapipe FaceMesh per video: tracking mode keeps the landmarks of consecutive frames
    consistent, and a fresh instance per video keeps results independent of what ran before."""

    def __init__(self, static_image_mode: bool = False):
        from avatars.face import import_mediapipe

        mp = import_mediapipe()  # slow to import; only the measuring paths need it

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_image_mode, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        """(468, 2) landmark pixel coordinates of the first face, or None."""
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        h, w = frame_bgr.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def face_scale(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[EYE_OUTER_LEFT] - points[EYE_OUTER_RIGHT]))


def opening_from_landmarks(points: np.ndarray | None) -> float:
    if points is None:
        return math.nan
    scale = face_scale(points)
    if scale <= 0:
        return math.nan
    return float(np.linalg.norm(points[UPPER_INNER_LIP] - points[LOWER_INNER_LIP]) / scale)


def face_landmarks(frames_bgr: Iterable[np.ndarray]) -> list[np.ndarray | None]:
    with FaceLandmarker() as landmarker:
        return [landmarker(frame) for frame in frames_bgr]


def mouth_openings(frames_bgr: Iterable[np.ndarray]) -> np.ndarray:
    """Inner-lip opening / eye-corner distance per frame, NaN where no face was found."""
    return np.array([opening_from_landmarks(p) for p in face_landmarks(frames_bgr)], dtype=np.float64)


# ----------------------------------------------------------------------------------------- audio

def frame_levels_db(audio: np.ndarray, fps: float, n_frames: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """RMS level (dBFS) of the samples in each frame's window; frames past the audio are silent."""
    edges = np.round(np.arange(n_frames + 1) * sr / fps).astype(np.int64)
    x = np.asarray(audio, dtype=np.float64)
    x = np.concatenate([x, np.zeros(max(0, int(edges[-1]) - x.size))])
    # Cumulative sums make any (also fractional) samples-per-frame count a single vector operation.
    csum = np.concatenate([[0.0], np.cumsum((x - x.mean()) ** 2)])
    counts = np.maximum(np.diff(edges), 1)
    mean_sq = (csum[edges[1:]] - csum[edges[:-1]]) / counts
    return 10.0 * np.log10(np.maximum(mean_sq, 0.0) + 1e-10)


def speech_envelope(audio_16k: np.ndarray, fps: float, n_frames: int, sr: int = SAMPLE_RATE,
                    range_db: float = ENVELOPE_RANGE_DB) -> np.ndarray:
    """0..1 log-energy envelope per video frame (0 = silence or >= range_db below the speech level)."""
    levels = frame_levels_db(audio_16k, fps, n_frames, sr)
    top = np.percentile(levels, 95) if levels.size else 0.0
    env = (np.clip(levels, top - range_db, top) - (top - range_db)) / range_db
    if env.size >= 3:
        padded = np.pad(env, 1, mode="edge")
        env = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return env


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True."""
    diff = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return np.flatnonzero(diff == 1), np.flatnonzero(diff == -1)


def silent_frames(audio_16k: np.ndarray, fps: float, n_frames: int, min_silence_s: float = MIN_SILENCE_S,
                  sr: int = SAMPLE_RATE, rel_db: float = SILENCE_REL_DB, abs_dbfs: float = SILENCE_ABS_DBFS,
                  guard_frames: int = 0) -> np.ndarray:
    """Frames inside silences lasting >= min_silence_s; `guard_frames` are dropped at both run ends."""
    levels = frame_levels_db(audio_16k, fps, n_frames, sr)
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    threshold = max(float(np.percentile(levels, 95)) - rel_db, abs_dbfs)
    quiet = levels < threshold
    min_len = max(1, math.ceil(min_silence_s * fps - 1e-9))
    starts, ends = true_runs(quiet)
    keep = (ends - starts) >= min_len
    out = np.zeros(n_frames, dtype=bool)
    for start, end in zip(starts[keep] + guard_frames, ends[keep] - guard_frames):
        out[start:max(start, end)] = True
    return out


# ------------------------------------------------------------------------------------ statistics

def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the positions where both are finite; 0 when either is constant or too short."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return 0.0
    a = a[ok] - a[ok].mean()
    b = b[ok] - b[ok].mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    # A relative floor: float noise on a constant series must not turn into a correlation.
    if denom <= 1e-12 * max(1.0, float(np.abs(a).max()) * float(np.abs(b).max())) * a.size:
        return 0.0
    return float(np.clip(a @ b / denom, -1.0, 1.0))


def best_lag_correlation(openings: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
    """Largest Pearson r of openings[t] vs envelope[t - lag] over lag in -max_lag..max_lag."""
    n = min(len(openings), len(envelope))
    o = np.asarray(openings[:n], dtype=np.float64)
    e = np.asarray(envelope[:n], dtype=np.float64)
    best = (-math.inf, 0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            r = pearson(o[lag:], e[:n - lag])
        else:
            r = pearson(o[:n + lag], e[-lag:])
        # Ties (e.g. all zero) go to the smallest |lag|.
        if r > best[0] + 1e-12 or (abs(r - best[0]) <= 1e-12 and abs(lag) < abs(best[1])):
            best = (r, lag)
    return float(best[0]), int(best[1])


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` frames that skips NaN (a missed face must not poison its neighbours)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    kernel = np.ones(window)
    sums = np.convolve(np.where(ok, x, 0.0), kernel, mode="same")
    counts = np.convolve(ok.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def syllable_band(x: np.ndarray, fps: float, window_s: float = SYLLABLE_WINDOW_S) -> np.ndarray:
    """Remove the slow speech/pause blocks so only syllable-rate (> ~2 Hz) movement is left."""
    window = max(3, int(round(window_s * fps)) | 1)
    x = np.asarray(x, dtype=np.float64)
    return x - moving_average(x, window)


def motion_range(openings: np.ndarray) -> float:
    finite = np.asarray(openings, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0
    p5, p95 = np.percentile(finite, [5, 95])
    return float(p95 - p5)


def closed_threshold(openings: np.ndarray, margin: float = CLOSED_MARGIN) -> float:
    finite = np.asarray(openings, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return math.nan
    rest = min(float(np.percentile(finite, REST_PERCENTILE)), REST_CAP)
    return rest + margin


def closed_share(openings: np.ndarray, silent_mask: np.ndarray, threshold: float | None = None) -> float:
    """Share of silent frames (with a face) whose opening is <= threshold; NaN without such frames."""
    if threshold is None:
        threshold = closed_threshold(openings)
    n = min(len(openings), len(silent_mask))
    o = np.asarray(openings[:n], dtype=np.float64)
    sel = np.asarray(silent_mask[:n], dtype=bool) & np.isfinite(o)
    if not sel.any():
        return math.nan
    return float(np.mean(o[sel] <= threshold))


# ----------------------------------------------------------------------------------- outside SSIM

def lower_face_mask(points: np.ndarray, shape: tuple[int, ...], margin: float = MASK_MARGIN) -> np.ndarray:
    """True inside the dilated hull of the jaw/nose-base/lip landmarks (the region a renderer may change)."""
    h, w = shape[:2]
    hull = cv2.convexHull(np.round(points[list(LOWER_FACE_LANDMARKS)]).astype(np.int32))
    outside = np.full((h, w), 255, dtype=np.uint8)
    cv2.fillConvexPoly(outside, hull, 0)
    # Distance to the hull dilates by a margin in pixels in one pass, whatever its size.
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    return distance <= margin * face_scale(points)


def to_gray(frame_bgr: np.ndarray) -> np.ndarray:
    return frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)


def _fit(frame: np.ndarray, shape: tuple[int, ...], interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """A reference of another size is scaled to the output's size rather than refused."""
    if frame.shape[:2] == shape[:2]:
        return frame
    return cv2.resize(frame, (shape[1], shape[0]), interpolation=interpolation)


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """skimage.metrics.structural_similarity(a, b, data_range=data_range, full=True)[1] for grayscale
    frames (7x7 uniform window, sample covariance, reflected borders), equal to it within 1e-11, in a third
    of its time: OpenCV's box filter in place of scipy's uniform_filter and the arithmetic done in place.
    It was most of the CPU of analysing a render against its template, once per output frame."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def window_mean(x: np.ndarray) -> np.ndarray:
        return cv2.blur(x, (7, 7), borderType=cv2.BORDER_REFLECT)

    cov = 49 / 48  # sample covariance over the 49 pixels of the window
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = window_mean(a), window_mean(b)
    uxx, uyy, uxy = window_mean(a * a), window_mean(b * b), window_mean(np.multiply(a, b, out=a))
    uxuy = ux * uy
    ux *= ux
    uy *= uy
    b2 = uxx  # (vx + vy) + c2, vx = cov * (uxx - ux^2), vy likewise
    b2 += uyy
    b2 -= ux
    b2 -= uy
    b2 *= cov
    b2 += c2
    a2 = uxy  # 2 * vxy + c2, vxy = cov * (uxy - ux * uy)
    a2 -= uxuy
    a2 *= 2 * cov
    a2 += c2
    b1 = ux  # ux^2 + uy^2 + c1
    b1 += uy
    b1 += c1
    a1 = uxuy  # 2 * ux * uy + c1
    a1 *= 2
    a1 += c1
    a1 *= a2
    b1 *= b2
    return np.divide(a1, b1, out=a1)


def outside_frame_stats(out_bgr: np.ndarray, ref_bgr: np.ndarray, excluded: np.ndarray) -> tuple[float, float]:
    """(mean SSIM, |mean gray difference|) over the pixels outside `excluded`."""
    out_gray = to_gray(out_bgr)
    ref_gray = to_gray(_fit(ref_bgr, out_gray.shape))
    keep = ~_fit(excluded.astype(np.uint8), out_gray.shape, cv2.INTER_NEAREST).astype(bool)
    if not keep.any():
        return math.nan, math.nan
    ssim = ssim_map(out_gray, ref_gray)
    shift = abs(float(out_gray[keep].mean()) - float(ref_gray[keep].mean()))
    return float(ssim[keep].mean()), shift


def used_reference_frames(n_out: int | None, n_ref: int, stride: int = 1) -> set[int] | None:
    """Reference indices output frames 0, stride, 2*stride, ... are compared with (None: all)."""
    if n_out is None:
        return None
    return set((np.arange(0, n_out, stride) % n_ref).tolist())


class OutsideRegionComparer:
    """Output frame i vs reference frame i mod len(reference), outside the reference's lower face.

    The reference is read once and only the frames that will be compared are kept, as grayscale with
    their excluded region; so a long template does not have to fit in memory in colour. Reference
    landmarks come from a static-image FaceMesh: a frame's region must not depend on which frames
    were looked at before it (strides and loops visit them out of order)."""

    def __init__(self, reference, masks: Sequence[np.ndarray] | None = None, margin: float = MASK_MARGIN,
                 n_out: int | None = None, stride: int = 1):
        self.n_ref = reference_length(reference)
        if self.n_ref == 0:
            raise ValueError("the reference has no frames")
        used = used_reference_frames(n_out, self.n_ref, stride)
        self.grays: dict[int, np.ndarray] = {}
        self.excluded: dict[int, np.ndarray | None] = {}
        given = list(masks) if masks is not None else None
        with (FaceLandmarker(static_image_mode=True) if given is None else nullcontext()) as landmarker:
            for k, frame in enumerate(iter_reference(reference)):
                if used is not None and k not in used:
                    continue
                self.grays[k] = to_gray(frame)
                if given is not None:
                    self.excluded[k] = np.asarray(given[k % len(given)], dtype=bool)
                else:
                    points = landmarker(frame)
                    self.excluded[k] = None if points is None else lower_face_mask(points, frame.shape, margin)
        self._fill_missing_regions()

    def _fill_missing_regions(self) -> None:
        """A reference frame where the mesh blinked borrows the nearest frame's region: the head
        barely moves between neighbouring frames."""
        found = np.array(sorted(k for k, m in self.excluded.items() if m is not None))
        if found.size == 0:
            log.warning("no face in the compared reference frames: SSIM outside the mask is undefined")
            return
        for k, mask in self.excluded.items():
            if mask is None:
                self.excluded[k] = self.excluded[int(found[np.argmin(np.abs(found - k))])]

    def compare(self, i: int, frame_bgr: np.ndarray) -> tuple[float, float]:
        k = i % self.n_ref
        if k not in self.grays:
            # The container declared fewer frames than it decoded; the extra frames go unscored.
            log.debug("reference frame %d was not kept; output frame %d is not compared", k, i)
            return math.nan, math.nan
        excluded = self.excluded[k]
        if excluded is None:
            return math.nan, math.nan
        return outside_frame_stats(frame_bgr, self.grays[k], excluded)


def outside_mask_stats(frames_out: Iterable[np.ndarray], frames_ref, masks: Sequence[np.ndarray] | None = None,
                       margin: float = MASK_MARGIN, stride: int = 1) -> dict:
    """SSIM and brightness shift outside the lower-face region, every `stride`-th output frame."""
    n_out = len(frames_out) if hasattr(frames_out, "__len__") else None
    comparer = OutsideRegionComparer(frames_ref, masks, margin, n_out, stride)
    scores, shifts = [], []
    for i, frame in enumerate(frames_out):
        if i % stride == 0:
            score, shift = comparer.compare(i, frame)
            scores.append(score)
            shifts.append(shift)
    return summarize_outside(np.array(scores), np.array(shifts))


def summarize_outside(scores: np.ndarray, shifts: np.ndarray) -> dict:
    if scores.size == 0 or not np.isfinite(scores).any():
        return {"ssim_outside_mask": math.nan, "ssim_outside_mask_min": math.nan,
                "outside_luma_shift_mean": math.nan, "outside_luma_shift_max": math.nan, "ssim_frames": 0}
    return {
        "ssim_outside_mask": float(np.nanmean(scores)),
        "ssim_outside_mask_min": float(np.nanmin(scores)),
        "outside_luma_shift_mean": float(np.nanmean(shifts)),
        "outside_luma_shift_max": float(np.nanmax(shifts)),
        "ssim_frames": int(np.isfinite(scores).sum()),
    }


def ssim_outside_mask(frames_out: Iterable[np.ndarray], frames_ref: Sequence[np.ndarray] | np.ndarray | str | Path,
                      masks: Sequence[np.ndarray] | None = None, margin: float = MASK_MARGIN,
                      stride: int = 1) -> float:
    """Mean SSIM outside the lower-face region (masks: True = excluded; derived from the reference
    frames' landmarks when not given)."""
    return outside_mask_stats(frames_out, frames_ref, masks, margin, stride)["ssim_outside_mask"]


# --------------------------------------------------------------------------------------- analyze

def sync_figures(openings: np.ndarray, audio_16k: np.ndarray, fps: float, max_lag: int = MAX_LAG) -> dict:
    """Everything that needs only the openings and the audio."""
    n = len(openings)
    envelope = speech_envelope(audio_16k, fps, n)
    silent = silent_frames(audio_16k, fps, n, guard_frames=max_lag)
    loud = ~silent_frames(audio_16k, fps, n, min_silence_s=0.0)  # every frame with sound in it
    r_raw, lag = best_lag_correlation(openings, envelope, max_lag)
    r_syl, lag_syl = best_lag_correlation(syllable_band(openings, fps), syllable_band(envelope, fps), max_lag)
    moves = motion_range(openings)
    static = moves < MIN_MOTION
    face = np.isfinite(openings)
    threshold = closed_threshold(openings)

    def std_where(mask: np.ndarray) -> float:
        sel = mask & face
        return float(np.std(openings[sel])) if sel.sum() >= 2 else math.nan

    figures = {
        "face_detected_share": float(face.mean()) if n else 0.0,
        "r": 0.0 if static else r_raw,
        "r_raw": r_raw,
        "lag_frames": lag,
        "r_syllable": 0.0 if static else r_syl,
        "lag_frames_syllable": lag_syl,
        "open_mean": float(np.nanmean(openings)) if face.any() else math.nan,
        "open_std": float(np.nanstd(openings)) if face.any() else math.nan,
        "open_p5": float(np.nanpercentile(openings, 5)) if face.any() else math.nan,
        "open_p95": float(np.nanpercentile(openings, 95)) if face.any() else math.nan,
        "motion_range": moves,
        "closed_threshold": threshold,
        "open_std_speech": std_where(loud),
        "open_std_silence": std_where(silent),
        "speech_frames": int(loud.sum()),
        "silent_frames": int(silent.sum()),
        "closed_share_in_silence": closed_share(openings, silent, threshold),
        "closed_share_in_speech": closed_share(openings, loud, threshold),
    }
    figures["verdict"] = verdict(figures)
    return figures


def verdict(figures: dict) -> str:
    """A one-word reading of the figures for dashboards; the numbers remain the evidence."""
    if figures["face_detected_share"] < MIN_FACE_SHARE:
        return "no_face"
    if figures["motion_range"] < MIN_MOTION:
        return "static_mouth"
    if figures["r"] < SYNCED_R:
        return "unsynced"
    return "synced"


def analyze(video: str | Path, audio: str | Path | np.ndarray | None = None,
            reference: str | Path | np.ndarray | Sequence[np.ndarray] | None = None,
            max_lag: int = MAX_LAG, ssim_stride: int = 1, mask_margin: float = MASK_MARGIN,
            masks: Sequence[np.ndarray] | None = None) -> dict:
    """Measure one video in a single decoding pass. `audio`: a file, a mono 16 kHz float array, or
    None for the video's own track. `reference`: the source avatar (see `iter_reference`)."""
    fps = video_fps(video)
    samples = audio if isinstance(audio, np.ndarray) else read_audio(audio if audio is not None else video)
    comparer = None
    if reference is not None:
        comparer = OutsideRegionComparer(reference, masks, mask_margin, video_frame_count(video), ssim_stride)
    openings, scores, shifts = [], [], []
    with FaceLandmarker() as landmarker:
        for i, frame in enumerate(iter_video_frames(video)):
            openings.append(opening_from_landmarks(landmarker(frame)))
            if comparer is not None and i % ssim_stride == 0:
                score, shift = comparer.compare(i, frame)
                scores.append(score)
                shifts.append(shift)
    openings = np.array(openings, dtype=np.float64)
    n = len(openings)
    result = {
        "video": str(video),
        "audio": "array" if isinstance(audio, np.ndarray) else str(audio if audio is not None else video),
        "frames": n,
        "fps": fps,
        "duration_s": n / fps if fps else 0.0,
        "audio_s": samples.size / SAMPLE_RATE,
        **sync_figures(openings, samples, fps, max_lag),
    }
    if comparer is not None:
        result["reference_frames"] = comparer.n_ref
        result.update(summarize_outside(np.array(scores), np.array(shifts)))
    return result


def json_ready(value):
    """NaN/inf -> None and numpy scalars -> Python, rounded for reading."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return round(value, 4) if math.isfinite(value) else None
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mouth_sync", description=__doc__.split("\n")[0])
    parser.add_argument("video")
    parser.add_argument("--audio", help="speech to compare against (default: the video's own audio track)")
    parser.add_argument("--reference", help="source avatar: video file, frame directory or image")
    parser.add_argument("--json-out", help="also write the JSON object to this file")
    parser.add_argument("--max-lag", type=int, default=MAX_LAG)
    parser.add_argument("--ssim-stride", type=int, default=1, help="compare every n-th frame only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.ssim_stride < 1 or args.max_lag < 0:
        parser.error("--ssim-stride must be >= 1 and --max-lag >= 0")
    if args.audio is None and not probe(Path(args.video)).has_audio:
        parser.error(f"{args.video} has no audio track: give the speech with --audio")
    figures = json_ready(analyze(args.video, args.audio, args.reference, args.max_lag, args.ssim_stride))
    # The file gets exactly what is printed, machine block included.
    printed = io.StringIO()
    with redirect_stdout(printed):
        emit("mouth_sync", figures)
    sys.stdout.write(printed.getvalue())
    if args.json_out:
        Path(args.json_out).write_text(printed.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
