"""The shipped speech prior (lipsync.prior): the file this code was written for, and a mouth that it opens
on open vowels and shuts on m, b and p of speech it never heard (the fleet's own synthesis, whose phone
times are known), from the encoder alone (speech without phones) and with the aligned phones."""

from __future__ import annotations

import functools
import subprocess

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


@functools.lru_cache(maxsize=1)
def _speech():
    return speech_16k(get_settings(), SENTENCE, "en")


def _gap(deform: np.ndarray) -> np.ndarray:
    """The inner lips' vertical gap change (inter-ocular units) of each frame's deformation."""
    d = deform.reshape(len(deform), len(SHAPE), 2)
    return d[:, LOWER_INNER, 1].mean(axis=1) - d[:, UPPER_INNER, 1].mean(axis=1)


def _frames_of(phones, symbols, n: int) -> np.ndarray:
    """The video frame in the middle of each phone named in `symbols` (IPA, or its first letter)."""
    mids = [int((p.start + p.end) / 2 * FPS) for p in phones if p.symbol in symbols]
    return np.array([m for m in mids if 0 <= m < n])


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


@pytest.mark.parametrize("with_phones", [False, True])
def test_the_prior_opens_on_open_vowels_and_shuts_on_bilabials(with_phones):
    speech, truth = _speech()
    n = int(round(speech.size / 16000 * FPS))
    prior = load_prior()
    enc = encoder_features(speech, n, prior.encoder_opts)
    parts = [prior.encoder.predict(enc)]
    if with_phones:
        phones = align_speech(speech)
        assert phones
        parts.append(prior.phones.predict(phone_features(phones, n, prior.phone_opts)))
    gap = _gap(np.mean(parts, axis=0))
    vowels, closures = _frames_of(truth, OPEN_IPA, n), _frames_of(truth, BILABIAL_IPA, n)
    assert len(vowels) >= 5 and len(closures) >= 10, ([p.symbol for p in truth])
    # Open vowels part the lips wider than m, b and p do, by a good share of the speech's own range
    # (the bank widens the prior's spread to its presenter's own: MouthBank._articulate) ...
    spread = float(np.percentile(gap, 95) - np.percentile(gap, 5))
    contrast = gap[vowels].mean() - gap[closures].mean()
    assert contrast > 0.25 * spread, (gap[vowels].round(3), gap[closures].round(3))
    # ... and not with the phones' times moved by half the sentence (the same phones, out of step).
    moved = gap[(vowels + n // 2) % n].mean() - gap[(closures + n // 2) % n].mean()
    assert contrast > 2 * abs(moved), (contrast, moved)


def test_enrollment_finds_how_far_the_samples_mouth_sits_from_its_sound(tmp_path):
    """The prior is moved to the sample's own timing: the same talking clip with its picture 3 frames
    (120 ms) late gets a lag 3 frames larger (within one)."""
    from conftest import shared_media
    from lipsync.enroll import enroll

    clip = shared_media("real-talk-2.mp4")
    late = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-itsoffset", "0.12", "-i", str(clip),
                    "-map", "1:v", "-map", "0:a", "-c:v", "libx264", "-crf", "16", "-c:a", "aac", str(late)], check=True)
    lags = [enroll(path, tmp_path / name)["speech_prior_lag"] for name, path in (("own", clip), ("late", late))]
    assert abs(lags[1] - lags[0] - 3) <= 1, lags
