"""The mouth a mapping predicts stays inside what the presenter's own mouth did (issue 15): a ridge
fitted on a few seconds, its spread widened to the presenter's, must never draw a shape beyond the
enrollment's range (real-talk-5 once showed its lips pressed up under the nose above a long chin)."""

from __future__ import annotations

import numpy as np

from lipsync.canonical import SHAPE
from lipsync.features import FeatureOptions, MelOptions, Ridge, mel_features
from lipsync.mouth import analyse
from lipsync.mouthbank import MouthBank

SR = 16000


def _speech(seconds: float = 3.0) -> np.ndarray:
    """Syllable-like bursts: a voiced buzz at 4 Hz with silences between."""
    t = np.arange(int(seconds * SR)) / SR
    buzz = np.sign(np.sin(2 * np.pi * 140 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 900 * t))
    return (0.3 * buzz * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)


def _bank(coef_scale: float) -> MouthBank:
    rng = np.random.default_rng(0)
    rest = np.stack([np.linspace(-1, 1, len(SHAPE)), np.zeros(len(SHAPE))], axis=1).astype(np.float32)
    comp = np.zeros((2, len(SHAPE) * 2), np.float32)
    comp[0, 1::2] = np.linspace(0, 1, len(SHAPE)) / np.sqrt((np.linspace(0, 1, len(SHAPE)) ** 2).sum())
    comp[1, 0::2] = 1 / np.sqrt(len(SHAPE))
    dim = mel_features(_speech(), 10, MelOptions()).shape[1]
    ridge = Ridge(np.zeros(dim, np.float32), np.ones(dim, np.float32), np.zeros(2, np.float32),
                  (coef_scale * rng.standard_normal((dim, 2))).astype(np.float32), 1.0, 0.0)
    return MouthBank(ref=np.zeros((10, 2), np.float32), patches=np.zeros((0, 1, 1, 3), np.uint8), shapes=rest[None],
                     poses=np.zeros((1, 6, 2), np.float32), mask=np.ones((4, 4), np.float32),
                     pca_mean=rest.ravel(), pca_comp=comp, pca_range=np.array([[-0.2, -0.1], [0.3, 0.1]], np.float32),
                     pca_std=np.array([0.1, 0.05], np.float32), rest=rest, open=rest, learned=ridge,
                     features=FeatureOptions(), mapping="mel-ridge")


def test_predicted_shapes_stay_in_the_presenters_range():
    speech = _speech()
    track = analyse(speech, 25)
    bank = _bank(coef_scale=5.0)  # a wild mapping: its raw coefficients run far beyond the range
    raw = bank.learned.predict(mel_features(speech, len(track.open), bank.mel))
    assert (np.abs(raw) > 1.0).mean() > 0.5, "the test's mapping must overshoot to prove anything"
    shapes = bank.predict_shapes(speech, track)
    coeffs = (shapes.reshape(len(shapes), -1) - bank.pca_mean) @ bank.pca_comp.T
    assert (coeffs >= bank.pca_range[0] - 1e-4).all() and (coeffs <= bank.pca_range[1] + 1e-4).all()
    # ... and the mouth still moves with the bursts, across most of that range.
    assert np.ptp(coeffs[:, 0]) > 0.5 * np.ptp(bank.pca_range[:, 0]), np.ptp(coeffs[:, 0])


def test_predicted_lips_never_cross():
    """Coefficients clipped one by one can still combine into lips that cross (real-talk-5's
    enrollment did on 4-19% of frames of new speech, its real footage never): the renderer's warp
    then folds the lower lip into the mouth. A mapping that swings the lips shut and past it must
    leave them meeting, never crossed."""
    from lipsync.canonical import CORNER_L, CORNER_R, LOWER_INNER, UPPER_INNER
    from lipsync.mouthbank import SHUT_GAP

    bank = _bank(coef_scale=5.0)
    rest = bank.rest.copy()
    rest[LOWER_INNER, 1] += 0.05  # lips 0.05 apart at rest
    closing = np.zeros((len(SHAPE), 2), np.float32)
    closing[LOWER_INNER, 1], closing[UPPER_INNER, 1] = -1.0, 1.0  # a coefficient of 0.1 crosses them
    comp = bank.pca_comp.copy()
    comp[0] = closing.ravel() / np.linalg.norm(closing)
    bank.pca_comp, bank.pca_mean, bank.rest, bank.open = comp, rest.ravel(), rest, rest
    speech = _speech()
    track = analyse(speech, 25)
    coeffs = np.clip(bank.learned.predict(mel_features(speech, len(track.open), bank.mel)), *bank.pca_range)
    raw = (bank.pca_mean + coeffs @ comp).reshape(len(coeffs), len(SHAPE), 2)
    assert ((raw[:, LOWER_INNER, 1] - raw[:, UPPER_INNER, 1]).min(axis=1) < 0).mean() > 0.2, "must cross to prove anything"
    shapes = bank.predict_shapes(speech, track)
    width = np.linalg.norm(shapes[:, CORNER_L] - shapes[:, CORNER_R], axis=-1)
    gap = (shapes[:, LOWER_INNER, 1] - shapes[:, UPPER_INNER, 1]).min(axis=1)
    assert (gap >= SHUT_GAP * width - 1e-4).all(), gap.min()
