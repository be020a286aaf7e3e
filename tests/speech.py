"""Speech fixtures made through the service's own TTS (no ../shared needed)."""

from __future__ import annotations

import io
import wave

import numpy as np

from conftest import poll_job


def tts_pcm(api, text: str) -> tuple[np.ndarray, int]:
    job = poll_job(api, api.post("/v1/tts", json={"text": text}).json()["job_id"])
    assert job["status"] == "finished", job
    with wave.open(io.BytesIO(api.get(job["result"]["url"]).content)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    """A 220 Hz tone as 16-bit mono WAV bytes (valid audio that is not speech)."""
    t = np.arange(int(seconds * rate)) / rate
    return wav_bytes(0.1 * np.sin(2 * np.pi * 220 * t) * 32767, rate)


def upload_speech(api, sentences: list[str], pause_s: float = 1.0, lead_s: float = 0.6) -> tuple[str, float]:
    """TTS of each sentence joined by pauses, uploaded; returns (file ref, duration in s)."""
    parts, rate = [], 24000
    for i, sentence in enumerate(sentences):
        pcm, rate = tts_pcm(api, sentence)
        parts += [np.zeros(int((lead_s if i == 0 else pause_s) * rate)), pcm]
    parts.append(np.zeros(int(lead_s * rate)))
    pcm = np.concatenate(parts)
    up = api.post("/v1/files", files={"file": ("speech.wav", wav_bytes(pcm, rate), "audio/wav")})
    assert up.status_code == 201, up.text
    return up.json()["file"], pcm.size / rate
