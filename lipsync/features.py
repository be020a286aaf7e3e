"""Per-video-frame audio features with articulation context, for audio-to-mouth mappings.

Each video frame gets MFCCs of the speech around it from 80 ms before to 120 ms after (the window
MuseTalk's audio encoder sees), plus the frame's loudness relative to the utterance. Cepstra have
their utterance mean (over voiced frames) removed, so a mapping learned on one
recording (a presenter's sample) transfers to another (TTS, a phone call) with a different channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
N_MELS = 26
N_CEPS = 8


@dataclass(frozen=True)
class FeatureOptions:
    fps: int = 25
    sub_steps: int = 1  # analysis frames per video frame (40 ms hop at 25 fps)
    before_s: float = 0.08
    after_s: float = 0.12
    n_ceps: int = N_CEPS


def _mel_filters(n_fft: int, sample_rate: int, n_mels: int, fmin: float = 60.0, fmax: float = 7600.0) -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / np.maximum(mid - lo, 1e-6)
    down = (hi - freqs[None, :]) / np.maximum(hi - mid, 1e-6)
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    return (np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)).astype(np.float32)


def _analysis_frames(audio: np.ndarray, n: int, hop: int, win: int) -> np.ndarray:
    pad = np.pad(audio.astype(np.float32), (win // 2, win + hop * n))
    idx = np.arange(n)[:, None] * hop + np.arange(win)[None, :]
    return pad[idx] * np.hanning(win).astype(np.float32)[None, :]


def frame_features(audio: np.ndarray, n_frames: int, opts: FeatureOptions = FeatureOptions()) -> np.ndarray:
    """[n_frames, D] float32 features for `n_frames` video frames of 16 kHz mono `audio`."""
    hop = SAMPLE_RATE // (opts.fps * opts.sub_steps)
    win = 400  # 25 ms
    n_sub = n_frames * opts.sub_steps
    frames = _analysis_frames(audio, n_sub, hop, win)
    n_fft = 512
    spec = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    logmel = np.log(spec @ _mel_filters(n_fft, SAMPLE_RATE, N_MELS).T + 1e-8)
    ceps = logmel @ _dct_matrix(N_MELS, opts.n_ceps + 1).T
    energy_db = 10 * np.log10(spec.sum(axis=1) / (win * win / 4) + 1e-10)
    level = float(np.percentile(energy_db, 95)) if n_sub else 0.0
    loud = np.clip((energy_db - level + 40.0) / 40.0, 0.0, 1.2)
    voiced = energy_db > level - 30.0
    ref = ceps[voiced] if voiced.sum() >= 4 else ceps
    ceps = ceps - ref.mean(axis=0)
    ceps = np.where(voiced[:, None], ceps, ceps * 0.3)
    sub = np.concatenate([loud[:, None], ceps[:, 1:]], axis=1).astype(np.float32)
    # Stack the context: sub-frames from `before_s` before each video frame's centre to `after_s` after.
    step_s = 1.0 / (opts.fps * opts.sub_steps)
    offsets = np.arange(-round(opts.before_s / step_s), round(opts.after_s / step_s) + 1)
    centre = np.arange(n_frames) * opts.sub_steps + opts.sub_steps // 2
    idx = np.clip(centre[:, None] + offsets[None, :], 0, n_sub - 1)
    return sub[idx].reshape(n_frames, -1)


@dataclass(frozen=True)
class Ridge:
    """Linear map features -> targets, fitted in closed form (no scikit-learn needed for a few
    thousand rows)."""

    mean_x: np.ndarray
    std_x: np.ndarray
    mean_y: np.ndarray
    coef: np.ndarray
    alpha: float
    cv_r: float  # cross-validated correlation of predictions with targets (first target)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_x) / self.std_x) @ self.coef + self.mean_y

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}mean_x": self.mean_x, f"{prefix}std_x": self.std_x, f"{prefix}mean_y": self.mean_y,
                f"{prefix}coef": self.coef, f"{prefix}meta": np.array([self.alpha, self.cv_r], np.float64)}

    @classmethod
    def from_arrays(cls, data, prefix: str) -> "Ridge":
        alpha, cv_r = (float(v) for v in data[f"{prefix}meta"])
        return cls(data[f"{prefix}mean_x"], data[f"{prefix}std_x"], data[f"{prefix}mean_y"],
                   data[f"{prefix}coef"], alpha, cv_r)


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas=(1, 3, 10, 30, 100, 300, 1000, 3000), folds: int = 5,
              extra: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> Ridge:
    """Ridge with the penalty chosen on contiguous folds: neighbouring video frames are nearly
    identical, so leave-one-out would reward memorising them and pick too little penalty. One
    eigendecomposition per fold serves every penalty (the encoder's features have thousands of columns). `extra` (x, y) pairs,
    such as the sample's tempo copies, join the final fit only: in the folds a held-out frame's copy
    would leak into the training part and pick too little penalty again."""
    n = len(x)
    edges = np.linspace(0, n, min(folds, max(2, n // 10)) + 1).astype(int)
    preds = {alpha: np.zeros_like(y, dtype=np.float64) for alpha in alphas}
    for a, b in zip(edges[:-1], edges[1:]):
        train = np.r_[0:a, b:n]
        for alpha, model in zip(alphas, _solve(x[train], y[train], alphas)):
            preds[alpha][a:b] = model.predict(x[a:b])
    best = None
    for alpha, pred in preds.items():
        err = float(((pred - y) ** 2).mean())
        if best is None or err < best[0]:
            r = float(np.corrcoef(pred[:, 0], y[:, 0])[0, 1]) if y[:, 0].std() > 0 and pred[:, 0].std() > 0 else 0.0
            best = (err, alpha, r)
    _, alpha, cv_r = best
    if extra:
        x, y = np.concatenate([x, *(e[0] for e in extra)]), np.concatenate([y, *(e[1] for e in extra)])
    model = _solve(x, y, (alpha,))[0]
    return Ridge(model.mean_x, model.std_x, model.mean_y, model.coef, float(alpha), cv_r)


def _solve(x: np.ndarray, y: np.ndarray, alphas) -> list[Ridge]:
    """Ridge solutions for every penalty from one eigendecomposition of the smaller Gram matrix
    (rows x rows, or columns x columns): the same solutions as from the SVD of the standardised
    features, V s/(s^2+a) U'y = X'U 1/(s^2+a) U'y, at a fraction of its cost (a minute's sample with
    its tempo copies: 4,500 rows of 4,608 encoder columns)."""
    mean_x, std_x = x.mean(axis=0), x.std(axis=0) + 1e-6
    mean_y = y.mean(axis=0)
    xs = ((x - mean_x) / std_x).astype(np.float64)
    yc = (y - mean_y).astype(np.float64)
    dual = len(xs) <= xs.shape[1]
    gram = xs @ xs.T if dual else xs.T @ xs
    rhs = yc if dual else xs.T @ yc
    if len(alphas) == 1:  # the final fit: one Cholesky solve, a tenth of the eigendecomposition's time
        from scipy.linalg import solve

        coef = solve(gram + alphas[0] * np.eye(len(gram)), rhs, assume_a="pos")
        return [_ridge(mean_x, std_x, mean_y, xs.T @ coef if dual else coef, alphas[0])]
    power, vectors = np.linalg.eigh(gram)
    power = np.maximum(power, 0.0)
    # dual: coef = X' U diag(1/(p+a)) U'y; primal: coef = V diag(1/(p+a)) V'X'y
    projected = vectors.T @ rhs
    out = []
    for alpha in alphas:
        coef = vectors @ (projected / (power + alpha)[:, None])
        out.append(_ridge(mean_x, std_x, mean_y, xs.T @ coef if dual else coef, alpha))
    return out


def _ridge(mean_x, std_x, mean_y, coef, alpha) -> Ridge:
    return Ridge(mean_x.astype(np.float32), std_x.astype(np.float32), mean_y.astype(np.float32),
                 coef.astype(np.float32), float(alpha), 0.0)


# --- The log-mel mapping: context and a small network (see MelOptions, Mlp) --------------------

@dataclass(frozen=True)
class MelOptions:
    """Log-mel context for the network an enrollment trains: 40 bands at 10 ms, normalised per
    utterance over its voiced part (channel and voice level drop out), from `before` to `after`
    hops around each video frame. Chosen on pd-reagan-farewell and pd-tedlieu-wda (enroll 55%,
    test the rest): inner-lip opening r 0.41/0.50 with a ridge, 0.44/0.56 with the network,
    against 0.25/0.46 for the MFCC features."""

    fps: int = 25
    n_mels: int = 40
    before: int = 10  # hops of 10 ms
    after: int = 14
    stride: int = 2


def mel_features(audio: np.ndarray, n_frames: int, opts: MelOptions = MelOptions()) -> np.ndarray:
    """[n_frames, D] float32: z-scored log-mels (and relative loudness) around each video frame."""
    hop, win = SAMPLE_RATE // 100, 400
    n = len(audio) // hop + 1
    spec = np.abs(np.fft.rfft(_analysis_frames(audio, n, hop, win), n=512, axis=1)) ** 2
    mels = np.log(spec @ _mel_filters(512, SAMPLE_RATE, opts.n_mels).T + 1e-8)
    energy = np.log(np.exp(mels).sum(axis=1) + 1e-8)
    level = float(np.percentile(energy, 95)) if n else 0.0
    voiced = energy > level - 7.0  # natural-log units: about 30 dB under the speech level
    ref = mels[voiced] if voiced.sum() >= 4 else mels
    z = (mels - ref.mean(axis=0)) / (ref.std(axis=0) + 1e-3)
    loud = np.clip((energy - level + 9.0) / 9.0, -0.5, 1.2)[:, None]
    x = np.concatenate([z, loud], axis=1).astype(np.float32)
    centre = np.arange(n_frames) * (100 // opts.fps)
    offsets = np.arange(-opts.before, opts.after + 1, opts.stride)
    idx = np.clip(centre[:, None] + offsets[None, :], 0, len(x) - 1)
    return x[idx].reshape(n_frames, -1)


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


@dataclass(frozen=True)
class Mlp:
    """An ensemble of one-hidden-layer networks, features -> targets, run in numpy (trained once at
    enrollment by lipsync.train.fit_mlp)."""

    mean_x: np.ndarray
    std_x: np.ndarray
    mean_y: np.ndarray
    std_y: np.ndarray
    w1: np.ndarray  # [E, D, H]
    b1: np.ndarray  # [E, H]
    w2: np.ndarray  # [E, H, T]
    b2: np.ndarray  # [E, T]

    def predict(self, x: np.ndarray) -> np.ndarray:
        xs = ((x - self.mean_x) / self.std_x).astype(np.float32)
        out = np.zeros((len(x), self.w2.shape[2]), np.float32)
        for e in range(len(self.w1)):
            out += _gelu(xs @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]
        return out / len(self.w1) * self.std_y + self.mean_y

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in ("mean_x", "std_x", "mean_y", "std_y", "w1", "b1", "w2", "b2")}

    @classmethod
    def from_arrays(cls, data, prefix: str) -> "Mlp":
        return cls(*(data[f"{prefix}{k}"] for k in ("mean_x", "std_x", "mean_y", "std_y", "w1", "b1", "w2", "b2")))
