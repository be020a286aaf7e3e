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


def video_size(path: Path) -> tuple[int, int]:
    out = run_ffmpeg(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                      "-of", "csv=p=0", str(path)], binary="ffprobe", timeout=60)
    try:
        w, h = (int(v) for v in out.decode().strip().split(",")[:2])
    except ValueError as exc:
        raise MediaError("no video stream") from exc
    return w, h


def iter_video_frames(path: Path, width: int, height: int, fps: int = 25):
    """Decode a video as BGR frames of the given size at `fps`, one at a time (bounded memory)."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-an",
            "-vf", f"fps={fps},scale={width}:{height}:flags=area", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    size = width * height * 3
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise MediaError(f"ffmpeg failed: {' | '.join(err.splitlines()[-3:]) or 'exit ' + str(code)}")


class VideoWriter:
    """Raw BGR frames in, an MP4 (H.264 yuv420p + AAC, +faststart) out, through one ffmpeg process."""

    def __init__(self, path: Path, width: int, height: int, fps: int = 25, audio: Path | None = None,
                 preset: str = "veryfast", crf: int = 17) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
                "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio is not None:
            argv += ["-i", str(audio)]
        argv += ["-map", "0:v:0"] + (["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-ar", "44100"] if audio else [])
        argv += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                 "-g", str(2 * fps), "-movflags", "+faststart", "-f", "mp4", str(self._tmp)]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError as exc:
            raise MediaError(self._error()) from exc
        self.frames += 1

    def _error(self) -> str:
        self._proc.wait()
        tail = self._proc.stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        return f"ffmpeg failed: {' | '.join(tail) or 'exit ' + str(self._proc.returncode)}"

    def close(self) -> Path:
        self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise MediaError(self._error())
        self._proc.stderr.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.unlink(missing_ok=True)
