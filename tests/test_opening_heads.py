"""Speech without phone times opens the enrolled mouth as the enrollment's opening heads hear it
(lipsync/mouthbank.py MouthBank.opened_as_heard), in-process on real footage: a presenter enrolled on
the first 55% of a clip, new speech (the clip's last 45%) judged against the real footage of it.

pd-reagan-farewell is a development clip (the heads' share was chosen on it): this guards the mechanism,
it is no figure of how far the lips generalise (bench.redub reports that on other clips). Skips without
../shared.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest

from bench.mouth_sync import mouth_openings
from conftest import shared_media
from core.media import decode_audio, iter_video_frames, video_size
from lipsync.canonical import inner_opening
from lipsync.enroll import enroll
from lipsync.mouth import analyse
from lipsync.mouthbank import BANK_VERSION, MouthBank

SHARE = 0.55


def _r(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """(bank, the held-out speech at 16 kHz, the real footage's tracked opening for it)."""
    clip = shared_media("pd-reagan-farewell.mp4")
    frames = list(iter_video_frames(clip, *video_size(clip), 25))
    cut = int(round(SHARE * len(frames)))
    work = tmp_path_factory.mktemp("heads")
    sample = work / "sample.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-frames:v", str(cut), "-t", f"{cut / 25:.3f}",
                    "-c:v", "libx264", "-crf", "14", "-c:a", "aac", "-b:a", "192k", str(sample)], check=True)
    meta = enroll(sample, work / "bank")
    assert meta["version"] == BANK_VERSION and len(meta["opening_cv_r"]) == 2, meta
    speech = decode_audio(clip, 16000)[cut * 640:len(frames) * 640]
    return MouthBank.load(work / "bank"), speech, mouth_openings(frames[cut:])


def _predicted(bank: MouthBank, speech: np.ndarray) -> np.ndarray:
    track = analyse(speech, 25)
    return inner_opening(bank.predict_shapes(speech, track))


def test_the_heads_bring_the_opening_closer_to_the_real_one(held_out):
    bank, speech, real = held_out
    n = min(len(real), len(_predicted(bank, speech)))
    with_heads = _r(_predicted(bank, speech)[:n], real[:n])
    without = _r(_predicted(replace(bank, opening_heads=()), speech)[:n], real[:n])
    # The same speech moved by half its length: a mouth that moves like speech, out of sync.
    rotated = _r(_predicted(bank, np.roll(speech, speech.size // 2))[:n], real[:n])
    assert with_heads >= without + 0.03, (with_heads, without)
    assert with_heads >= rotated + 0.25, (with_heads, rotated)


def test_speech_with_phone_times_is_left_to_the_phones(held_out):
    """Synthesised speech carries its phones (lipsync.visemes): they place the vowels and closures,
    and the heads, which hear only the sound, leave those shapes as they are."""
    bank, speech, _ = held_out
    track = analyse(speech, 25)
    phoned = replace(track, vowels=np.zeros_like(track.open), closure=np.zeros_like(track.open))
    assert np.array_equal(bank.predict_shapes(speech, phoned),
                          replace(bank, opening_heads=()).predict_shapes(speech, phoned))
