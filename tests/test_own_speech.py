"""A live room's own speech (its TTS WAVs) is read in-process, as ffmpeg would decode it; anything else
still goes through ffmpeg (core.media.decode_own_speech, used by workers/stream.py)."""

from __future__ import annotations

import subprocess

import numpy as np

from core.media import decode_audio, decode_own_speech, write_wav


def test_own_wav_reads_like_ffmpeg_and_other_files_fall_back(tmp_path):
    rate = 22050
    t = np.arange(int(1.3 * rate)) / rate
    speech = (0.4 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    wav = tmp_path / "s.wav"
    write_wav(wav, speech, rate)
    ours, ffmpeg = decode_own_speech(wav, 44100), decode_audio(wav, 44100)
    assert ours.dtype == np.float32 and abs(ours.size - ffmpeg.size) <= 2
    n = min(ours.size, ffmpeg.size)
    assert np.corrcoef(ours[:n], ffmpeg[:n])[0, 1] > 0.999 and np.abs(ours[:n] - ffmpeg[:n]).max() < 0.02
    m4a = tmp_path / "s.m4a"  # not a PCM WAV: decoded by ffmpeg as before
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    other = decode_own_speech(m4a, 44100)
    assert abs(other.size / 44100 - 1.3) < 0.1 and np.abs(other).max() > 0.2


def test_a_reply_starts_at_its_first_sound():
    """The silence a synthesised WAV begins with is not played before a reply's first piece
    (workers.stream.leading_silence): only the onset's own 20 ms are kept."""
    from workers.stream import leading_silence

    rate = 48000
    tone = 0.3 * np.cos(np.arange(rate) / 7).astype(np.float32)
    speech = np.concatenate([np.zeros(int(0.15 * rate), np.float32), tone])
    assert leading_silence(speech, rate) == int(0.13 * rate)
    assert leading_silence(speech[int(0.15 * rate):], rate) == 0  # nothing to take
    assert leading_silence(np.zeros(2 * rate, np.float32), rate) == int(0.48 * rate)  # at most 0.5 s
