"""core.media.change_tempo and change_pitch: the enrollment's tempo copies (lipsync.enroll) are the sample's sound at
another pace, not another voice: shorter or longer by the factor, at the same pitch, each syllable
where the factor puts it (a copy's sound is paired with the sample's lip shapes at the scaled time)."""

from __future__ import annotations

import numpy as np
import pytest

from core.media import change_pitch, change_tempo

SR = 16000
BURSTS = (0.3, 0.9, 1.5, 2.1, 2.5)  # s: syllable-like tone bursts of 120 ms


def _syllables(seconds: float = 3.0, pitch: float = 220.0) -> np.ndarray:
    out = np.zeros(int(seconds * SR), np.float32)
    t = np.arange(int(0.12 * SR)) / SR
    for start in BURSTS:
        i = int(start * SR)
        out[i:i + len(t)] = 0.3 * np.sin(2 * np.pi * pitch * t) * np.hanning(len(t))
    return out


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    band = (freqs >= 50) & (freqs <= 1000)
    return float(freqs[band][np.argmax(spectrum[band])])


def _centre(x: np.ndarray, around: float, half: float = 0.15) -> float:
    a = max(0, int((around - half) * SR))
    power = x[a:int((around + half) * SR)].astype(np.float64) ** 2
    return (a + float(np.sum(np.arange(len(power)) * power) / np.sum(power))) / SR


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_a_tempo_copy_keeps_its_pitch_and_puts_each_syllable_in_time(factor):
    sound = _syllables()
    copy = change_tempo(sound, factor)
    assert abs(len(copy) - len(sound) / factor) < 0.03 * SR
    assert abs(_peak_hz(copy) - 220.0) < 4.0, "the voice's pitch moved"
    for start in BURSTS:
        expected = (start + 0.06) / factor
        got = _centre(copy, expected)
        assert abs(got - expected) < 0.012, f"a syllable at {got:.3f} s, not {expected:.3f} s"


def test_a_tempo_beyond_one_pass_is_refused():
    with pytest.raises(ValueError):
        change_tempo(_syllables(0.5), 3.0)


@pytest.mark.parametrize("factor", [0.85, 1.2])
def test_a_pitch_copy_moves_the_voice_and_keeps_each_syllable_in_time(factor):
    """The speech prior's copies (lipsync.prior): another register, the same timing and length."""
    sound = _syllables()
    copy = change_pitch(sound, factor)
    assert len(copy) == len(sound)
    assert abs(_peak_hz(copy) - 220.0 * factor) < 6.0, f"pitch {_peak_hz(copy):.0f} Hz"
    for start in BURSTS:
        got = _centre(copy, start + 0.06)
        assert abs(got - (start + 0.06)) < 0.012, f"a syllable at {got:.3f} s, not {start + 0.06:.3f} s"
