"""Enrollment: a talking clip of the presenter (own speech) -> the presenter's MouthBank.

One streaming pass over the clip: each frame is meshed, mapped into the canonical frame (see
lipsync/canonical.py) and its lower face kept as an exemplar with its lip/chin shape and pose. Then a
shape model (PCA of lips + chin) and the mappings from speech to shape coefficients are fitted on every
frame, and on copies of the sample at other paces; a diverse subset of at most `max_exemplars`
appearances is kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from lipsync.canonical import POSE, RESAMPLING, SHAPE, STABLE, apply, inner_opening, inter_ocular, similarity
from avatars.face import FaceMesher
from lipsync.identity import PRESENTER_FILE, presenter_of_file, save_presenter
from lipsync.mouthbank import BANK_VERSION, MouthBank, speech_prior_weight
from avatars.prepare import AvatarError, PrepareOptions, _FaceChecks, _scaled_size, file_sha256
from core.media import MediaError, change_tempo, decode_audio, iter_video_frames, probe, video_size
from lipsync.features import FeatureOptions, Ridge, fit_ridge, mel_features
from lipsync.align import SILENCE, UNKNOWN, align_speech, phone_features
from lipsync.phonetic import encoder_features
from lipsync.prior import at_tempo_frames, best_lag, lip_gap, load_prior
from lipsync.train import fit_mlp
from lipsync.mouth import SAMPLE_RATE, analyse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrollOptions:
    min_duration_s: float = 2.0
    max_duration_s: float = 180.0
    max_side: int = 1280
    max_exemplars: int = 320
    min_speech_share: float = 0.2  # of the clip's frames
    max_missing_share: float = 0.3  # frames without a face (skipped, not interpolated)
    iod_range: tuple[float, float] = (96.0, 200.0)  # canonical inter-ocular distance, px
    # From this many frames with a face (2 s, the shortest sample) the log-mel mapping is a network;
    # below, a ridge. Averaged with the encoder's and the phones' mappings, the network did better
    # than the ridge at every length tried on the development clips (pd-reagan-farewell,
    # pd-tedlieu-wda; windows of 2.8-14 s inside the first 55%, tested on the rest, predicted
    # shapes): opening r +0.023 / +0.024 / +0.028 / +0.009 / +0.007 at 70 / 100 / 150 / 250 / 350
    # frames (44 windows), LMD ratio to the rotated speech's -0.015 / -0.018 / -0.021 / -0.021 /
    # -0.015, LMD +0.02..+0.05. It was 500 (20 s) when the log-mel mapping stood alone.
    network_min_frames: int = 50
    # From this many frames with a face (2 s, the shortest sample) the Whisper encoder's context gets
    # a mapping too (lipsync.phonetic); penalties for its thousands of columns.
    encoder_min_frames: int = 50
    encoder_alphas: tuple[float, ...] = (300, 1000, 3000, 10000, 30000, 100000)
    # English samples with at least this many phones said (not silence) get the phone mapping
    # (lipsync.align); penalties for its few hundred columns of mostly zeros.
    phones_min: int = 15
    phone_alphas: tuple[float, ...] = (10, 30, 100, 300, 1000, 3000, 10000)
    # Every mapping also learns from copies of the sample spoken this many times as fast, at the same
    # pitch (core.media.change_tempo), each frame's shape moved with its sound: new speech comes at
    # other paces than a short sample's. Chosen on the development clips' 44 windows (2.8-14 s inside
    # the first 55%, tested on the rest, predicted shapes, against enrollment without copies):
    # opening r +0.014 (better in 30), LMD ratio to the rotated speech's -0.007 (better in 38), LMD
    # +0.017, alike at every window length. Copies at (0.8, 0.9, 1.1, 1.2) did no better; resampled
    # copies, whose pitch moves too, less well (r +0.007, ratio -0.004).
    tempo_copies: tuple[float, ...] = (0.9, 1.1)


@dataclass(frozen=True)
class Canvas:
    """Where the canonical frame sits: the normalising transform of the first face and the patch box."""

    ref: np.ndarray
    width: int
    height: int
    mask: np.ndarray


def _canvas(landmarks: np.ndarray, opts: EnrollOptions) -> Canvas:
    iod = float(np.clip(inter_ocular(landmarks), *opts.iod_range))
    (lx, ly), (rx, ry) = landmarks[33], landmarks[263]
    angle = np.arctan2(ry - ly, rx - lx)
    scale = iod / max(1e-6, inter_ocular(landmarks))
    c, s = np.cos(-angle) * scale, np.sin(-angle) * scale
    norm = np.array([[c, -s, 0.0], [s, c, 0.0]])
    pts = apply(norm, landmarks)
    mouth = pts[SHAPE[:40]].mean(axis=0)
    nose_tip, chin = pts[4], pts[152]
    half_w = abs(float(pts[397, 0] - pts[172, 0])) / 2.0
    lower = float(chin[1] - nose_tip[1])
    x1, x2 = mouth[0] - 1.1 * half_w, mouth[0] + 1.1 * half_w
    y1, y2 = nose_tip[1] - 0.05 * lower, chin[1] + 0.5 * lower
    norm[:, 2] -= (x1, y1)
    width, height = int(np.ceil(x2 - x1)), int(np.ceil(y2 - y1))
    pts = apply(norm, landmarks)
    return Canvas(ref=pts[STABLE], width=width, height=height, mask=_mask(pts, width, height, half_w, iod))


def _mask(pts: np.ndarray, width: int, height: int, half_w: float, iod: float) -> np.ndarray:
    """Lower face from under the nose to below the chin, inside the cheeks: what speech moves."""
    mouth = pts[SHAPE[:40]].mean(axis=0)
    top = float(pts[2, 1]) + 0.25 * float(pts[0, 1] - pts[2, 1])
    bottom = float(pts[152, 1]) + 0.3 * float(pts[152, 1] - pts[4, 1])
    cy, b = (top + bottom) / 2.0, (bottom - top) / 2.0
    a = 0.82 * half_w
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = (np.abs((xs - mouth[0]) / a) ** 2.6 + np.abs((ys - cy) / b) ** 2.6) <= 1.0
    mask = inside.astype(np.float32)
    sigma = max(1.5, 0.045 * iod)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=int(sigma))
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _check_sample(path: Path, opts: EnrollOptions) -> np.ndarray:
    """The sample's 16 kHz speech, after its container, duration and audio were checked."""
    try:
        info = probe(path)
    except MediaError as exc:
        raise AvatarError("sample_undecodable", "the speech sample is not a decodable video") from exc
    if not info.has_video:
        raise AvatarError("sample_undecodable", "the speech sample has no video stream")
    if not info.has_audio:
        raise AvatarError("sample_no_audio", "the speech sample has no audio track; it must carry the presenter's own speech")
    if not opts.min_duration_s <= info.duration_s <= opts.max_duration_s:
        raise AvatarError("sample_duration", f"the speech sample is {info.duration_s:.1f} s; it must last "
                          f"{opts.min_duration_s:.0f} s to {opts.max_duration_s:.0f} s")
    try:
        audio = decode_audio(path)
    except MediaError as exc:
        raise AvatarError("sample_no_audio", "the speech sample's audio cannot be decoded") from exc
    track = analyse(audio, 25)
    rms_db = 10 * np.log10(float(np.mean(audio**2)) + 1e-12)
    if rms_db < -50 or track.voiced.mean() < opts.min_speech_share:
        raise AvatarError("sample_silent", f"the speech sample holds too little speech "
                          f"({100 * track.voiced.mean():.0f}% of it, {rms_db:.0f} dBFS)")
    return audio


@dataclass
class _Harvest:
    patches: list
    shapes: list
    poses: list
    frame_index: list


def _harvest(path: Path, opts: EnrollOptions, progress: Callable[[float], None]) -> tuple[_Harvest, Canvas, int]:
    w, h = _scaled_size(*video_size(path), opts.max_side)
    expected = max(1, int(probe(path).duration_s * 25))
    checks = _FaceChecks(expected, PrepareOptions())
    # Per-frame detection, not tracking: tracking smooths the lips over frames and blunts closures
    # (measured: opening r 0.51 -> 0.54 against real footage in bench.redub's split).
    mesher = FaceMesher(video=False)
    canvas, out, n = None, _Harvest([], [], [], []), 0
    try:
        for i, frame in enumerate(iter_video_frames(path, w, h, 25)):
            n = i + 1
            checks.see(i, frame)
            lm = mesher.landmarks(frame)
            if lm is None:
                continue
            canvas = canvas or _canvas(lm, opts)
            m = similarity(lm[STABLE], canvas.ref)
            out.patches.append(cv2.warpAffine(frame, m, (canvas.width, canvas.height), flags=RESAMPLING,
                                              borderMode=cv2.BORDER_REPLICATE))
            out.shapes.append(apply(m, lm[SHAPE]))
            out.poses.append(apply(m, lm[POSE]))
            out.frame_index.append(i)
            if i % 25 == 0:
                progress(0.8 * min(1.0, i / expected))
    except MediaError as exc:
        raise AvatarError("sample_undecodable", "the speech sample could not be decoded") from exc
    finally:
        mesher.close()
        checks.close()
    try:
        checks.verdict()
    except AvatarError as exc:
        raise AvatarError(f"sample_{exc.code}", f"speech sample: {exc}", **exc.details) from exc
    if canvas is None or n - len(out.frame_index) > opts.max_missing_share * n:
        raise AvatarError("sample_frames_without_face",
                          f"{n - len(out.frame_index)} of {n} frames of the speech sample show no face")
    return out, canvas, n


def _shape_model(shapes: np.ndarray, keep: float = 0.99, max_comp: int = 8):
    flat = shapes.reshape(len(shapes), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    var = s**2 / max(1e-9, (s**2).sum())
    n_comp = int(min(max_comp, max(2, np.searchsorted(np.cumsum(var), keep) + 1), len(s)))
    comp = vt[:n_comp]
    coeffs = (flat - mean) @ comp.T
    return mean.astype(np.float32), comp.astype(np.float32), coeffs


def _diverse(coeffs: np.ndarray, poses: np.ndarray, k: int) -> np.ndarray:
    """Farthest-point sampling over shape and pose: the widest variety of mouths within `k`."""
    if len(coeffs) <= k:
        return np.arange(len(coeffs))
    pose_flat = poses.reshape(len(poses), -1)
    feats = np.concatenate([coeffs / (coeffs.std(axis=0) + 1e-6),
                            0.5 * (pose_flat - pose_flat.mean(0)) / (pose_flat.std() + 1e-6)], axis=1)
    chosen = [int(np.argmin(np.linalg.norm(coeffs, axis=1)))]
    dist = np.linalg.norm(feats - feats[chosen[0]], axis=1)
    while len(chosen) < k:
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[j], axis=1))
    return np.array(sorted(chosen))


def _rest_and_open(shapes: np.ndarray, silent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The presenter's shut mouth (narrowest openings while silent, or overall) and a typical open
    one (the widest fifth of the openings)."""
    opening = inner_opening(shapes)
    order = np.argsort(opening)
    rest_pool = np.where(silent & (opening <= np.percentile(opening, 30)))[0]
    if len(rest_pool) < 3:
        rest_pool = order[:max(3, len(order) // 10)]
    return shapes[rest_pool].mean(axis=0), shapes[order[-max(3, len(order) // 5):]].mean(axis=0)


def _speaking_spread(coeffs: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    speaking = coeffs[voiced] if voiced.sum() >= 10 else coeffs
    return speaking.std(axis=0).astype(np.float32)


@dataclass(frozen=True)
class _Take:
    """The sample, or a copy of it at another tempo: its audio, frame count, the frames with a face
    and their shape coefficients; `tempo` scales the sample's own phone times."""

    audio: np.ndarray
    n: int
    index: np.ndarray
    coeffs: np.ndarray
    tempo: float = 1.0


def _takes(audio: np.ndarray, n: int, index: list, coeffs: np.ndarray, opts: EnrollOptions) -> list[_Take]:
    """The sample and its tempo copies. A copy's frame j shows the sample's shape at frame j*tempo
    (interpolated; only where both neighbouring frames had a face)."""
    takes = [_Take(audio, n, np.asarray(index), coeffs.astype(np.float32))]
    full = np.full((n, coeffs.shape[1]), np.nan)
    full[index] = coeffs
    per_frame = SAMPLE_RATE // 25
    for tempo in opts.tempo_copies:
        copy = change_tempo(audio, tempo)
        m = len(copy) // per_frame
        y = at_tempo_frames(full, tempo, m)
        ok = np.isfinite(y).all(axis=1)
        takes.append(_Take(copy, m, np.where(ok)[0], y[ok].astype(np.float32), tempo))
    return takes


def _ridge_on_takes(x: list[np.ndarray], takes: list[_Take], **kwargs) -> Ridge:
    """A ridge whose penalty is chosen on the sample's own rows and whose fit also learns the copies'."""
    return fit_ridge(x[0], takes[0].coeffs, extra=[(xi, t.coeffs) for xi, t in zip(x[1:], takes[1:])], **kwargs)


def _fit_mapping(bank: MouthBank, takes: list[_Take], opts: EnrollOptions):
    """The audio-to-shape mapping (log-mel context to the shape model's coefficients) and what
    describes its fit: a network from EnrollOptions.network_min_frames, a ridge below."""
    mels = [mel_features(t.audio, t.n, bank.mel)[t.index] for t in takes]
    if len(takes[0].index) >= opts.network_min_frames:
        mlp = fit_mlp(np.concatenate(mels), np.concatenate([t.coeffs for t in takes]))
        return mlp, {"mapping": "mlp", "hidden": int(mlp.w1.shape[2]), "ensemble": int(len(mlp.w1))}
    ridge = _ridge_on_takes(mels, takes)
    return ridge, {"mapping": "mel-ridge", "ridge_alpha": ridge.alpha, "ridge_cv_r": round(ridge.cv_r, 3)}


def _fit_encoder(bank: MouthBank, takes: list[_Take], opts: EnrollOptions) -> tuple[Ridge | None, dict]:
    """The second mapping, from the Whisper encoder's context, for speech without phone times."""
    if len(takes[0].index) < opts.encoder_min_frames:
        return None, {}
    x = [encoder_features(t.audio, t.n, bank.encoder)[t.index] for t in takes]
    ridge = _ridge_on_takes(x, takes, alphas=opts.encoder_alphas)
    return ridge, {"encoder_alpha": ridge.alpha, "encoder_cv_r": round(ridge.cv_r, 3)}


def _fit_phones(bank: MouthBank, takes: list[_Take], phones: list | None,
                opts: EnrollOptions) -> tuple[Ridge | None, dict]:
    """The third mapping, from the sample's own words force-aligned (`phones`, English samples
    only); the tempo copies' phones are the sample's, their times scaled."""
    said = [p for p in phones or [] if p.symbol not in (SILENCE, UNKNOWN)]
    if len(said) < opts.phones_min:
        return None, {"phones": len(said)}
    x = [phone_features([replace(p, start=p.start / t.tempo, end=p.end / t.tempo) for p in phones], t.n,
                        bank.phone_features)[t.index] for t in takes]
    ridge = _ridge_on_takes(x, takes, alphas=opts.phone_alphas)
    return ridge, {"phones": len(said), "phone_alpha": ridge.alpha, "phone_cv_r": round(ridge.cv_r, 3)}


def _speech_prior_lag(bank: MouthBank, take: _Take, phones: list | None) -> tuple[int, dict]:
    """How many frames the shipped speech prior must move to line its lip gap up with the sample's
    own (lipsync.prior.best_lag): the presenter's mappings learn their sample's timing, and footage is
    not always in sync with its sound."""
    prior = load_prior()
    enc = encoder_features(take.audio, take.n, prior.encoder_opts)
    phone_x = phone_features(phones, take.n, prior.phone_opts) if phones else None
    real = np.zeros(take.n)
    real[take.index] = lip_gap(bank.pca_mean + take.coeffs @ bank.pca_comp)
    face = np.zeros(take.n, bool)
    face[take.index] = True
    lag = best_lag(lip_gap(prior.deformation(enc, phone_x)), real, face)
    return lag, {"speech_prior_lag": lag, "speech_prior_weight": round(speech_prior_weight(len(take.index)), 4)}


def enroll(sample: Path, out_dir: Path, opts: EnrollOptions = EnrollOptions(),
           progress: Callable[[float], None] = lambda p: None) -> dict:
    """Learn the presenter's mouth from `sample` into `out_dir` (a bank directory); returns its metadata."""
    started = time.perf_counter()
    audio = _check_sample(sample, opts)
    harvest, canvas, n = _harvest(sample, opts, progress)
    shapes = np.stack(harvest.shapes)
    poses = np.stack(harvest.poses)
    mean, comp, coeffs = _shape_model(shapes)
    track = analyse(audio, 25, n)
    rest, open_shape = _rest_and_open(shapes, ~track.voiced[harvest.frame_index])
    feat_opts = FeatureOptions()
    bank = MouthBank(ref=canvas.ref, patches=np.zeros((0, 1, 1, 3), np.uint8), shapes=shapes, poses=poses,
                     mask=canvas.mask, pca_mean=mean, pca_comp=comp,
                     pca_range=np.stack([coeffs.min(axis=0), coeffs.max(axis=0)]).astype(np.float32),
                     pca_std=_speaking_spread(coeffs, track.voiced[harvest.frame_index]),
                     rest=rest, open=open_shape, learned=None, features=feat_opts)
    takes = _takes(audio, n, harvest.frame_index, coeffs, opts)
    bank.learned, fit = _fit_mapping(bank, takes, opts)
    bank.mapping = fit["mapping"]
    # Phones first: their English check encodes the sample, and the prior's lag and the encoder
    # mapping then read that pass (lipsync.phonetic keeps the last two utterances' passes; the
    # copies' would push it out).
    phones = align_speech(takes[0].audio)
    bank.phones, phone_fit = _fit_phones(bank, takes, phones, opts)
    bank.speech_prior_lag, lag_fit = _speech_prior_lag(bank, takes[0], phones)
    bank.sample_frames = len(takes[0].index)
    bank.speech, encoder_fit = _fit_encoder(bank, takes, opts)
    fit.update(encoder_fit, **phone_fit, **lag_fit, tempo_copies=list(opts.tempo_copies))
    progress(0.9)
    keep = _diverse(coeffs, poses, opts.max_exemplars)
    bank.patches = np.stack([harvest.patches[i] for i in keep])
    bank.shapes, bank.poses = shapes[keep], poses[keep]
    meta = {"sample_sha256": file_sha256(sample), "frames": n, "frames_with_face": len(harvest.frame_index),
            "exemplars": int(len(keep)), "components": int(len(comp)), **fit, "patch": [canvas.width, canvas.height],
            "duration_s": round(len(audio) / 16000, 3), "enroll_s": round(time.perf_counter() - started, 3),
            "created_at": time.time()}
    bank.save(out_dir, meta)
    # Kept so a renderer can tell whether this mouth belongs on a template (ExemplarEngine.fits).
    save_presenter(out_dir / PRESENTER_FILE, presenter_of_file(sample))
    progress(1.0)
    log.info("enrolled %s: %s", sample.name, meta)
    return {"version": BANK_VERSION, **meta}
