"""Phone times for uploaded English speech (lipsync.align): Whisper's words force-aligned by pocketsphinx.
Judged against the one source of true phone times the fleet has, its own synthesis: the aligner hears the
speech only, and must find the lips' closures (m, b, p) where Piper said them; Mandarin gets none."""

from __future__ import annotations

import functools

import numpy as np

from core.settings import get_settings
from lipsync.align import ARPABET, align_speech, phone_features
from workers.tts import speech_16k

SENTENCE = "Please remember to bring your passport, a pen and maybe a map of the city by the bay tomorrow morning."
BILABIAL_IPA, BILABIAL_ARPA = {"m", "b", "p"}, {"M", "B", "P"}


@functools.lru_cache(maxsize=2)
def _speech(text: str, language: str):
    return speech_16k(get_settings(), text, language)


def _onsets(phones, symbols) -> np.ndarray:
    return np.array([p.start for p in phones if p.symbol in symbols])


def test_aligned_closures_fall_where_the_synthesis_put_them():
    """Every m, b and p the synthesis said is found, in order, within three video frames of its own
    time; paired one closure off, they are not. (The aligner's onsets come 40-60 ms before Piper's:
    Piper counts the pause id before a phone, which already holds its onset, to the phone before.)"""
    speech, truth = _speech(SENTENCE, "en")
    aligned = align_speech(speech)
    assert aligned, "English speech got no phones"
    said, found = _onsets(truth, BILABIAL_IPA), _onsets(aligned, BILABIAL_ARPA)
    assert len(said) >= 10 and len(found) == len(said), (said.round(2).tolist(), found.round(2).tolist())
    near = np.abs(found - said) <= 0.12
    off_by_one = np.abs(found[1:] - said[:-1]) <= 0.12
    assert near.mean() >= 0.85 and off_by_one.mean() < 0.3, (said.round(2).tolist(), found.round(2).tolist())


def test_the_same_speech_gets_the_same_phones_and_features():
    speech, _ = _speech(SENTENCE, "en")
    first, second = align_speech(speech), align_speech(speech)
    assert first == second
    n = int(round(speech.size / 16000 * 25))
    features = phone_features(first, n)
    assert features.shape == (n, 7 * (len(ARPABET) + 5))
    assert np.array_equal(features, phone_features(second, n))
    # Each frame is in one phone, or silence, or a word the dictionary lacks (no one-hot).
    sums = features.reshape(n, 7, -1)[:, :, :len(ARPABET)].sum(axis=2)
    assert set(np.unique(sums)) <= {0.0, 1.0} and (sums == 1.0).mean() > 0.9


def test_mandarin_speech_has_no_english_phones():
    speech, _ = _speech("大家好，欢迎来到今天的直播间。", "zh")
    assert align_speech(speech) is None


def test_a_british_speaker_is_heard_as_english():
    """Whisper-base's own first guess for this speaker is Welsh (0.95 against 0.04 for English): the
    service speaks Mandarin and English, and decides between those two."""
    from conftest import shared_media
    from core.media import decode_audio

    speech = decode_audio(shared_media("long-cameron.mp4"), 16000)[:20 * 16000]
    phones = align_speech(speech)
    assert phones and sum(p.symbol not in ("SIL", "SPN") for p in phones) >= 100, phones


def test_silence_and_noise_get_no_phones():
    """Whisper alone wrote 112 words into 0.2 s of silence (a room's warm-up), and the aligner then
    placed phones on them: only what the VAD hears as speech is transcribed."""
    rng = np.random.default_rng(0)
    assert align_speech(np.zeros(3200, np.float32)) is None
    assert align_speech((0.05 * rng.standard_normal(3 * 16000)).astype(np.float32)) is None


def test_real_speech_gets_the_same_phones_on_a_fresh_worker_and_a_busy_one():
    """A fresh aligner and one that has aligned before give the same phone times: two identical renders
    draw identical mouths whatever their worker did first. (Real footage: a studio recording's first
    alignment came 10 ms off the later ones while the aligner's front end carried its state over.)"""
    from core.media import decode_audio
    from conftest import shared_media
    import lipsync.align as align

    speech = decode_audio(shared_media("pd-tedlieu-wda.mp4"), 16000)[:16000 * 14 // 5]
    align._decoder.cache_clear()
    fresh = align_speech(speech)
    assert fresh and align_speech(speech) == fresh
