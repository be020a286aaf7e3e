"""Phones of the fleet's own speech drive the mouth (issue 15): the vowel each phone carries, and a
mapping that murmurs still parting the lips on vowels and shutting them on m/b/p."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.canonical import LOWER_INNER, LOWER_MID, SHAPE, UPPER_MID, inner_opening
from lipsync.features import FeatureOptions, MelOptions, Ridge, mel_features
from lipsync.mouth import analyse
from lipsync.mouthbank import MouthBank
from lipsync.visemes import Phone, opening_track, vowel_opening, with_phones

SR = 16000


@pytest.mark.parametrize("symbol,level", [
    ("a4", 1.0), ("ian2", 1.0), ("uang1", 1.0), ("ou3", 0.65), ("e5", 0.65), ("i1", 0.35), ("iii2", 0.35),
    ("v3", 0.35), ("van2", 1.0), ("v", 0.0), ("f", 0.0), ("ɑ", 1.0), ("æ", 1.0), ("ə", 0.65), ("ɔ", 0.65), ("ɪ", 0.35), ("u", 0.35),
    ("sil", 0.0), ("eos", 0.0), ("#0", 0.0), ("^", 0.0), ("m", 0.0), ("b", 0.0), ("zh", 0.0), ("ˈ", 0.0),
    ("ː", 0.0), (",", 0.0), (" ", 0.0)])
def test_each_phone_parts_the_lips_as_far_as_its_vowel(symbol, level):
    assert vowel_opening(symbol) == pytest.approx(level)


def test_marks_take_their_vowels_level_and_a_short_vowel_still_gets_a_frame():
    phones = [Phone("m", 0.0, 0.08), Phone("ˈ", 0.08, 0.16), Phone("ɑ", 0.16, 0.18), Phone("ː", 0.18, 0.32),
              Phone("p", 0.32, 0.40), Phone("i", 0.40, 0.43)]
    track = opening_track(phones, 25, 12)
    # frames at 0, .04, ...: m m | stress (ɑ's level) x2 | ɑ (20 ms, no frame time inside: nearest) | ː ...
    assert track[:2].tolist() == [0.0, 0.0]
    assert (track[2:8] == 1.0).all(), track
    assert (track[8:10] == 0.0).all()
    assert track[10] == pytest.approx(0.35)  # 30 ms of i, one frame time inside


def _speech(seconds: float) -> np.ndarray:
    """A steady voiced buzz: an acoustic mapping has no syllables to follow in it."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sign(np.sin(2 * np.pi * 140 * t))).astype(np.float32)


def _murmuring_bank() -> MouthBank:
    """A bank whose mapping always predicts the rest shape (its lips barely apart)."""
    rest = np.stack([np.linspace(-1, 1, len(SHAPE)), np.zeros(len(SHAPE))], axis=1).astype(np.float32)
    rest[LOWER_MID, 0] = rest[UPPER_MID, 0]  # 13 above 14, so the gap is the vertical distance
    rest[LOWER_INNER, 1] += 0.02
    open_ = rest.copy()
    open_[LOWER_INNER, 1] += 0.4
    dim = mel_features(_speech(1.0), 10, MelOptions()).shape[1]
    comp = np.zeros((1, len(SHAPE) * 2), np.float32)
    comp[0, 2 * LOWER_MID + 1] = 1.0
    ridge = Ridge(np.zeros(dim, np.float32), np.ones(dim, np.float32), np.zeros(1, np.float32),
                  np.zeros((dim, 1), np.float32), 1.0, 0.0)
    return MouthBank(ref=np.zeros((10, 2), np.float32), patches=np.zeros((0, 1, 1, 3), np.uint8), shapes=rest[None],
                     poses=np.zeros((1, 6, 2), np.float32), mask=np.ones((4, 4), np.float32),
                     pca_mean=rest.ravel(), pca_comp=comp, pca_range=np.array([[-1.0], [1.0]], np.float32),
                     pca_std=np.array([0.0], np.float32), rest=rest, open=open_, learned=ridge,
                     features=FeatureOptions(), mapping="mel-ridge")


def test_a_murmuring_mapping_opens_on_vowels_and_shuts_on_bilabials_with_the_phones():
    bank = _murmuring_bank()
    speech = _speech(2.0)
    track = analyse(speech, 25)
    n = len(track.open)
    phones = [Phone("m", 0.40, 0.52), Phone("a1", 0.52, 0.80), Phone("b", 0.80, 0.88), Phone("i4", 0.88, 1.12),
              Phone("s", 1.12, 1.24), Phone("ou3", 1.24, 1.52)]
    widest = float(inner_opening(bank.open))
    without = inner_opening(bank.predict_shapes(speech, track))
    gap = inner_opening(bank.predict_shapes(speech, with_phones(track, phones)))
    frame = lambda t: int(round(t * 25))  # noqa: E731
    # The control: the mapping alone murmurs through the whole utterance.
    assert without.max() < 0.1 * widest, without.max()
    assert gap[frame(0.64)] >= 0.95 * widest  # a wide open
    assert 0.3 * widest <= gap[frame(1.0)] <= 0.45 * widest  # i a little
    assert 0.6 * widest <= gap[frame(1.4)] <= 0.75 * widest  # ou half
    shut = float(inner_opening(bank.shut)) + 1e-4  # the lips meet, a hair apart
    assert shut < 0.05 * widest and gap[frame(0.44)] <= shut and gap[frame(0.84)] <= shut  # m, b
    assert gap[frame(1.8)] == pytest.approx(without[frame(1.8)], abs=1e-4)  # after the phones: untouched
    assert gap.min() >= 0.0 and n == len(gap)


def test_a_short_vowel_between_two_bilabials_still_opens():
    """"probably": b ə b, the schwa 70 ms. The closures' lead-in and release fall on other frames;
    the schwa's own frame opens to its level (it opened to a slit under the closures' half weight)."""
    bank = _murmuring_bank()
    speech = _speech(1.0)
    track = analyse(speech, 25)
    phones = [Phone("ɑ", 0.20, 0.36), Phone("b", 0.36, 0.42), Phone("ə", 0.42, 0.49), Phone("b", 0.49, 0.55),
              Phone("l", 0.55, 0.60), Phone("i", 0.60, 0.70)]
    gap = inner_opening(bank.predict_shapes(speech, with_phones(track, phones)))
    widest, shut = float(inner_opening(bank.open)), float(inner_opening(bank.shut)) + 1e-4
    assert gap[11] >= 0.6 * widest, gap[8:16]  # 0.44 s, inside the schwa
    assert gap[10] <= shut and gap[12] <= shut, gap[8:16]  # 0.40 and 0.48 s: the two b's


def test_an_english_v_is_a_consonant_and_keeps_its_near_closure():
    """'v' is ü in pinyin finals ("v3") but the consonant in espeak's IPA: "give" keeps the lower lip
    to the teeth on its v, not a vowel's opening."""
    from lipsync.visemes import LABIODENTAL_CLOSURE

    track = analyse(_speech(1.0), 25)
    phones = [Phone("ɡ", 0.20, 0.28), Phone("ɪ", 0.28, 0.40), Phone("v", 0.40, 0.52), Phone("ə", 0.52, 0.64)]
    out = with_phones(track, phones)
    assert out.closure[11] == pytest.approx(LABIODENTAL_CLOSURE) and out.vowels[11] == 0.0  # 0.44 s, the v
