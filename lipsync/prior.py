"""A speaker-independent speech-to-lips prior, shipped with the code.

An enrollment learns its presenter's mappings from a few seconds of their speech: too little to hear
every phone in. The prior was learned once from other people's talking clips (public-domain footage,
the development clips pd-reagan-farewell and pd-tedlieu-wda; never the clips bench.redub reports on):
from the Whisper encoder's context and, for English, the force-aligned phones, to how each speaker's
lips and chin move away from their own mean shape, in inter-ocular distances. A presenter's bank
projects it onto its own shape model, and it joins the presenter's mappings in their average
(MouthBank._with_speech_mappings), moved in time by the lag that lines it up with the presenter's own
sample (enrollment measures it: best_lag). Footage is not always in sync with its sound: the two
development clips' mouths sit 2-3 frames apart against their speech, and a presenter's mappings learn
their own sample's timing.

Chosen on the development clips, trained on one and tested on the other's 44 enrollment windows of
2.8-14 s (predicted shapes, tested on the last 45%, against the presenter's mappings alone): as an equal
voice without a lag, opening r +0.033 (better in 44), LMD ratio to the rotated speech's -0.003 (33);
with the sample's lag, +0.060 (44) and -0.009 (40); with the lag at twice the weight, +0.093 (44) and
-0.011 (39); at three times r +0.109, ratio -0.011 (36), no longer better at 14 s. Learned from copies
of the clips at other paces and in higher and lower voices too (TEMPO_COPIES, PITCH_COPIES), at twice
the weight: +0.126 (44) and -0.027 (44), LMD 2.642 -> 2.522. A longer sample's own mappings need the
prior less: its weight falls with the sample's length past 14 s (mouthbank.speech_prior_weight). The
shipped prior is trained on both clips, the second moved by its lag against the first.

    python -m lipsync.prior build CLIP.mp4 [CLIP.mp4 ...]    # rewrites models/speech-prior.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from lipsync.align import PhoneFeatureOptions, align_speech, phone_features
from lipsync.canonical import LOWER_INNER, SHAPE, UPPER_INNER
from lipsync.features import Ridge, _solve
from lipsync.phonetic import SAMPLE_RATE, EncoderOptions, encoder_features

log = logging.getLogger(__name__)

PRIOR_FILE = Path(__file__).resolve().parent.parent / "models" / "speech-prior.npz"
# The shipped file's digest: a prior rebuilt (python -m lipsync.prior build) prints its own.
PRIOR_SHA256 = "433be488b69d13413751d4a2f9f28dc07d65720c73b7ccba7303722dbfc7f44e"
ENCODER_ALPHAS = (300, 1000, 3000, 10000, 30000, 100000)
PHONE_ALPHAS = (100, 300, 1000, 3000, 10000, 30000, 100000)
# The training clips are also learned from spoken this many times as fast at the same pitch, and in
# voices this many times as high at the same pace (both development speakers are men). Chosen on the
# development clips (trained on one, tested on the other's 44 windows, at weight 2 with the lag; against
# the presenter's mappings alone): without copies opening r +0.093 and LMD ratio -0.011; at 0.9 and 1.1
# +0.117 and -0.022; at 0.8-1.2 +0.124 and -0.026; at 0.9 and 1.1 with the two voices +0.123 and
# -0.024; all of them +0.126 and -0.027 (better in all 44).
TEMPO_COPIES = (0.8, 0.9, 1.1, 1.2)
PITCH_COPIES = (0.85, 1.2)
# How far apart a sample's mouth and its sound may sit (frames): the development clips' were 1-3.
MAX_LAG = 4


class PriorError(RuntimeError):
    """The shipped prior is missing or is not the file this code was written for."""


@dataclass(frozen=True)
class SpeechPrior:
    encoder: Ridge  # encoder context -> deformation [47*2] / inter-ocular distance
    phones: Ridge | None  # phone context -> the same (English)
    encoder_opts: EncoderOptions = EncoderOptions()
    phone_opts: PhoneFeatureOptions = PhoneFeatureOptions()

    def deformation(self, enc_x: np.ndarray, phone_x: np.ndarray | None) -> np.ndarray:
        """[n, 94] the lips' and chin's move from the speaker's mean shape (inter-ocular units): the
        encoder's and, given phones, the phones' predictions averaged."""
        parts = [self.encoder.predict(enc_x)]
        if phone_x is not None and self.phones is not None:
            parts.append(self.phones.predict(phone_x))
        return np.mean(parts, axis=0)

    def coefficients(self, enc_x: np.ndarray, phone_x: np.ndarray | None, iod: float,
                     components: np.ndarray, lag: int = 0) -> np.ndarray:
        """[n, C] a bank's shape coefficients (`components` [C, 94], around the bank's own mean
        shape, at its inter-ocular distance `iod`), `lag` frames later."""
        return shifted((self.deformation(enc_x, phone_x) * iod) @ components.T, lag)

    def save(self, path: Path, meta: dict) -> str:
        arrays = self.encoder.to_arrays("enc_") | (self.phones.to_arrays("ph_") if self.phones else {})
        meta = meta | {"encoder_opts": asdict(self.encoder_opts), "phone_opts": asdict(self.phone_opts)}
        arrays = {k: v.astype(np.float32) if k.endswith("coef") else v for k, v in arrays.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @classmethod
    def load(cls, path: Path) -> "SpeechPrior":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            phones = Ridge.from_arrays(data, "ph_") if "ph_coef" in data else None
            return cls(Ridge.from_arrays(data, "enc_"), phones, EncoderOptions(**meta["encoder_opts"]),
                       PhoneFeatureOptions(**meta["phone_opts"]))


def shifted(x: np.ndarray, lag: int) -> np.ndarray:
    """`x` (frames first) `lag` frames later (earlier when negative), its ends held."""
    idx = np.clip(np.arange(len(x)) - lag, 0, len(x) - 1)
    return x[idx]


def at_tempo_frames(values: np.ndarray, tempo: float, m: int) -> np.ndarray:
    """[m, ...] per-video-frame `values` as a copy of their speech spoken `tempo` times as fast shows
    them: its frame j is the original's at j*tempo, interpolated (NaN where either neighbour is NaN,
    even at a weight of 0)."""
    x = np.asarray(values, np.float64)
    t = np.arange(m) * tempo
    i0 = np.minimum(t.astype(int), len(x) - 1)
    i1 = np.minimum(i0 + 1, len(x) - 1)
    w = (t - i0).reshape((m,) + (1,) * (x.ndim - 1))
    return (1.0 - w) * x[i0] + w * x[i1]


def lip_gap(shapes: np.ndarray) -> np.ndarray:
    """The inner lips' vertical gap of [n, 47, 2] shapes (or its change, of deformations [n, 94])."""
    d = shapes.reshape(len(shapes), len(SHAPE), 2)
    return d[:, LOWER_INNER, 1].mean(axis=1) - d[:, UPPER_INNER, 1].mean(axis=1)


def best_lag(predicted: np.ndarray, real: np.ndarray, valid: np.ndarray | None = None) -> int:
    """The lag (frames, within +-MAX_LAG) that best lines a predicted lip gap up with a real one:
    Pearson r over the frames `valid` (those with a face) away from the ends."""
    valid = np.ones(len(real), bool) if valid is None else valid
    inner = valid.copy()
    inner[:MAX_LAG], inner[len(inner) - MAX_LAG:] = False, False
    best, best_r = 0, -np.inf
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a, b = shifted(predicted, lag)[inner], real[inner]
        r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else -np.inf
        if r > best_r + 1e-9:
            best, best_r = lag, r
    return best


@lru_cache(maxsize=1)
def load_prior(path: Path = PRIOR_FILE, sha256: str = PRIOR_SHA256) -> SpeechPrior:
    """The shipped prior, checked against its digest."""
    if not path.is_file():
        raise PriorError(f"the speech prior {path} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise PriorError(f"the speech prior {path} has sha256 {digest}, expected {sha256}")
    return SpeechPrior.load(path)


@dataclass(frozen=True)
class _Speaker:
    """One training clip on its own timeline: its speech and phones, features, deformations (held
    over frames without a face) and which frames had one."""

    audio: np.ndarray
    phone_times: list | None
    enc: np.ndarray
    phones: np.ndarray | None
    deform: np.ndarray
    face: np.ndarray

    def in_step(self, lag: int) -> "_Speaker":
        """The clip with its mouth moved `lag` frames earlier against its sound: a prior that finds
        the mouth `lag` frames late (best_lag) then finds it in step."""
        return replace(self, deform=shifted(self.deform, -lag), face=shifted(self.face, -lag))

    def at_tempo(self, tempo: float) -> "_Speaker":
        """The clip spoken `tempo` times as fast at the same pitch (core.media.change_tempo), each
        frame's deformation the one its sound came from (only where both neighbours had a face)."""
        from core.media import change_tempo

        audio = change_tempo(self.audio, tempo)
        m = len(audio) // (SAMPLE_RATE // EncoderOptions().fps)
        phones = [replace(p, start=p.start / tempo, end=p.end / tempo) for p in self.phone_times or []]
        return _Speaker(audio, phones or None, encoder_features(audio, m, EncoderOptions()),
                        phone_features(phones, m, PhoneFeatureOptions()) if phones else None,
                        at_tempo_frames(self.deform, tempo, m),
                        np.isfinite(at_tempo_frames(np.where(self.face, 0.0, np.nan), tempo, m)))

    def at_pitch(self, factor: float) -> "_Speaker":
        """The clip in a voice `factor` times as high, at the same pace (core.media.change_pitch)."""
        from core.media import change_pitch

        audio = change_pitch(self.audio, factor)
        return replace(self, audio=audio, enc=encoder_features(audio, len(self.deform), EncoderOptions()))


def _speaker(clip: Path) -> _Speaker:
    from avatars.face import FaceMesher
    from core.media import decode_audio, iter_video_frames, video_size
    from lipsync.canonical import STABLE, apply, similarity
    from lipsync.enroll import EnrollOptions, _canvas

    mesher = FaceMesher(video=False)
    try:
        marks = [mesher.landmarks(f) for f in iter_video_frames(clip, *video_size(clip), 25)]
    finally:
        mesher.close()
    face = np.array([m is not None for m in marks])
    # The canonical frame an enrollment of this clip would use (eyes level, its inter-ocular scale).
    ref = _canvas(marks[int(np.argmax(face))], EnrollOptions()).ref
    iod = float(np.linalg.norm(ref[0] - ref[3]))
    shapes = np.array([apply(similarity(m[STABLE], ref), m[SHAPE]) for m in marks if m is not None])
    deform = np.zeros((len(marks), 2 * len(SHAPE)))
    deform[face] = ((shapes - shapes.mean(axis=0)) / iod).reshape(len(shapes), -1)
    deform = deform[np.maximum.accumulate(np.where(face, np.arange(len(face)), 0))]  # held
    audio = decode_audio(clip, 16000)
    phones = align_speech(audio)
    return _Speaker(audio, phones, encoder_features(audio, len(marks), EncoderOptions()),
                    phone_features(phones, len(marks), PhoneFeatureOptions()) if phones else None, deform, face)


def _held_out_speaker(xs: list[np.ndarray], ys: list[np.ndarray], alphas,
                      extra: list[tuple[np.ndarray, np.ndarray]] = ()) -> Ridge:
    """A ridge on every speaker whose penalty is the one whose lip gap followed each speaker's best
    when learned from the others (the prior's use: people it never heard). Frame folds within
    speakers, or the held-out speakers' squared error, picked the largest penalty offered, which on
    the development clips halved the prior's gain (opening r +0.028, LMD ratio -0.001 where each
    clip's own choice gave +0.043 and -0.007): the error rewards shrinking a weak prediction to the
    mean, where the bank then restores the spread (MouthBank._articulate). `extra` rows (the clips'
    tempo copies) join the final fit only."""
    score = np.zeros(len(alphas))
    for k in range(len(xs)):
        x, y = np.concatenate(xs[:k] + xs[k + 1:]), np.concatenate(ys[:k] + ys[k + 1:])
        for j, model in enumerate(_solve(x, y, alphas)):
            score[j] += float(np.corrcoef(lip_gap(model.predict(xs[k])), lip_gap(ys[k]))[0, 1])
    alpha = alphas[int(np.argmax(score))]
    log.info("held-out speakers' gap r by penalty: %s", dict(zip(alphas, np.round(score / len(xs), 4))))
    x = np.concatenate(xs + [e[0] for e in extra])
    model = _solve(x, np.concatenate(ys + [e[1] for e in extra]), (alpha,))[0]
    return Ridge(model.mean_x, model.std_x, model.mean_y, model.coef, float(alpha), float(score.max() / len(xs)))


def _aligned(speakers: list[_Speaker]) -> tuple[list[_Speaker], list[int]]:
    """Every clip moved in time to agree with the first: a prior learned from the first finds each
    other clip's lag (best_lag), as an enrollment does."""
    first = speakers[0]
    enc = _solve(first.enc[first.face], first.deform[first.face], (ENCODER_ALPHAS[-1],))[0]
    lags = [0]
    for other in speakers[1:]:
        lags.append(best_lag(lip_gap(enc.predict(other.enc)), lip_gap(other.deform), other.face))
    return [s.in_step(lag) for s, lag in zip(speakers, lags)], lags


def build(clips: list[Path], out: Path = PRIOR_FILE) -> str:
    speakers, lags = _aligned([_speaker(c) for c in clips])
    copies = [s.at_tempo(tempo) for s in speakers for tempo in TEMPO_COPIES]
    copies += [s.at_pitch(factor) for s in speakers for factor in PITCH_COPIES]
    ys = [s.deform[s.face] for s in speakers]
    extra = [(c.enc[c.face], c.deform[c.face]) for c in copies]
    encoder = _held_out_speaker([s.enc[s.face] for s in speakers], ys, ENCODER_ALPHAS, extra)
    phones = None
    if all(s.phones is not None for s in speakers + copies):
        extra = [(c.phones[c.face], c.deform[c.face]) for c in copies]
        phones = _held_out_speaker([s.phones[s.face] for s in speakers], ys, PHONE_ALPHAS, extra)
    meta = {"clips": [c.name for c in clips], "lags": lags, "frames": int(sum(len(y) for y in ys)),
            "tempo_copies": list(TEMPO_COPIES), "pitch_copies": list(PITCH_COPIES), "encoder_alpha": encoder.alpha,
            "phone_alpha": phones.alpha if phones else None}
    digest = SpeechPrior(encoder, phones).save(out, meta)
    log.info("speech prior %s: %s sha256 %s", out, meta, digest)
    return digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="learn the prior from talking clips (the development clips)")
    b.add_argument("clips", nargs="+", type=Path)
    b.add_argument("--out", type=Path, default=PRIOR_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(build(args.clips, args.out))


if __name__ == "__main__":
    main()
