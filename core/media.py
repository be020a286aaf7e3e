"""Every ffmpeg/ffprobe call goes through here: argv lists, stderr captured into the error."""

from __future__ import annotations

import json
import logging
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class MediaError(ValueError):
    """Input media that cannot be decoded or does not meet the limits."""


def run_ffmpeg(args: list[str], *, binary: str = "ffmpeg", input_bytes: bytes | None = None,
               timeout: float = 600.0) -> bytes:
    argv = [binary, "-hide_banner", "-nostdin", *args] if binary == "ffmpeg" else [binary, *args]
    try:
        proc = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{binary} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise MediaError(f"{binary} failed: {' | '.join(tail) or 'exit ' + str(proc.returncode)}")
    return proc.stdout


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    has_audio: bool
    has_video: bool
    format_name: str


def probe(path: Path) -> MediaInfo:
    out = run_ffmpeg(["-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
                     binary="ffprobe", timeout=60)
    data = json.loads(out or b"{}")
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    durations = [float(s["duration"]) for s in streams if s.get("duration") not in (None, "N/A")]
    if fmt.get("duration") not in (None, "N/A"):
        durations.append(float(fmt["duration"]))
    return MediaInfo(
        duration_s=max(durations) if durations else 0.0,
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        has_video=any(s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic") != 1
                      for s in streams),
        format_name=str(fmt.get("format_name", "")),
    )


def decode_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Any container with an audio track -> mono float32 in [-1, 1] at `sample_rate`."""
    raw = run_ffmpeg(["-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate),
                      "-f", "f32le", "-acodec", "pcm_f32le", "-"])
    audio = np.frombuffer(raw, dtype=np.float32)
    if audio.size == 0:
        raise MediaError("no audio samples could be decoded")
    return audio


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV, written to a temp name then renamed so readers never see half a file."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    tmp = path.with_name(f".{path.name}.tmp")
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    tmp.replace(path)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        frames = wav.readframes(wav.getnframes())
    if width != 2:
        raise MediaError("only 16-bit WAV is read directly")
    audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate
