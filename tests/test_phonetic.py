"""The Whisper encoder's phonetic context (lipsync.phonetic): what an enrollment's second mapping reads
for speech without phone times. A mapping learned on one sentence of the fleet's own voice must follow
the articulation (vowels opening, m/b/p shutting, from the synthesis' own phone times) of another
sentence, where the same mapping rotated in time does not."""

from __future__ import annotations

import functools

import numpy as np

from core.settings import get_settings
from lipsync.enroll import EnrollOptions
from lipsync.features import fit_ridge
from lipsync.mouth import frame_count
from lipsync.phonetic import ENCODER_HZ, encoder_features, encoder_states, language_scores, whisper
from lipsync.visemes import closure_track, opening_track
from workers.tts import speech_16k

FIRST = "The weather was warm and bright, so we walked along the river to the old market by the bridge."
SECOND = "Please remember to bring your passport, a pen and maybe a map of the city centre tomorrow morning."


@functools.lru_cache(maxsize=2)
def _speech(text: str) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz English from the fleet's voice and its articulation per video frame (vowel opening
    minus closure), from the phones the synthesis reports."""
    speech, phones = speech_16k(get_settings(), text, "en")
    n = frame_count(speech.size)
    return speech, opening_track(phones, 25, n) - closure_track(phones, 25, n)


def test_encoder_states_cover_the_speech_window_by_window():
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(16000 * 33)).astype(np.float32)  # over one 30 s window
    states = encoder_states(audio)
    assert states.shape[0] == 33 * ENCODER_HZ and np.isfinite(states).all()
    again = encoder_features(audio[:16000], 25)
    assert again.shape == (25, 9 * states.shape[1])
    assert np.array_equal(again, encoder_features(audio[:16000], 25)), "the same speech, the same features"


def test_a_mapping_from_one_sentence_follows_the_articulation_of_another():
    speech, target = _speech(FIRST)
    ridge = fit_ridge(encoder_features(speech, len(target)), target[:, None], alphas=EnrollOptions().encoder_alphas)
    other, other_target = _speech(SECOND)
    predicted = ridge.predict(encoder_features(other, len(other_target)))[:, 0]
    r = float(np.corrcoef(predicted, other_target)[0, 1])
    rotated = float(np.corrcoef(np.roll(predicted, len(predicted) // 2), other_target)[0, 1])
    assert r >= 0.5, f"articulation of unseen speech followed with r {r:.2f} only"
    assert abs(rotated) < 0.25, f"the control out of sync still correlates: {rotated:.2f}"


def test_the_mapping_and_the_language_check_share_one_encoder_pass():
    """Uploaded English speech needs the encoder's context (the mapping) and Whisper's language scores
    (lipsync.align): one pass of the encoder serves both, and the scores are Whisper's own."""
    speech = _speech(SECOND)[0] * np.float32(0.9)  # not yet encoded by another test
    model = whisper()
    passes = []
    encode = model.encode
    model.encode = lambda features: passes.append(1) or encode(features)
    try:
        encoder_features(speech, frame_count(speech.size))
        scores = language_scores(speech)
    finally:
        del model.encode
    assert len(passes) == 1, f"{len(passes)} encoder passes for one utterance"
    _, _, expected = model.detect_language(speech)
    assert scores == {name: float(p) for name, p in expected}
    assert max(scores, key=scores.get) == "en"
