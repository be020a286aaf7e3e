"""A viewer for benchmarks: pulls a room's RTMP stream like a player and timestamps what arrives."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque

import numpy as np

LOW_LATENCY = ["-fflags", "nobuffer", "-flags", "low_delay", "-probesize", "32768", "-analyzeduration", "0"]


class AudioViewer(threading.Thread):
    """Decodes the stream's audio as it arrives; keeps (arrival wall time, RMS) per 20 ms and, with
    `keep_audio`, the 16 kHz samples themselves (what a listener heard by a given time)."""

    def __init__(self, url: str, keep_audio: bool = False) -> None:
        super().__init__(daemon=True)
        self.chunks: list[tuple[float, np.ndarray]] | None = [] if keep_audio else None
        # A probe long enough to meet the first audio packet: a stream pulled from its start opens with
        # a large keyframe, and a 32 KB probe would find no audio at all. Probing only delays the start;
        # what follows is decoded as it arrives.
        probe = ["-fflags", "nobuffer", "-flags", "low_delay", "-probesize", "2000000", "-analyzeduration", "1000000"]
        self.proc = subprocess.Popen(["ffmpeg", "-v", "error", *probe, "-i", url, "-map", "0:a:0", "-ac", "1",
                                      "-ar", "16000", "-f", "s16le", "-"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.levels: deque[tuple[float, float]] = deque(maxlen=100000)

    def run(self) -> None:
        while True:
            buf = self.proc.stdout.read(640)
            if len(buf) < 640:
                return
            pcm = np.frombuffer(buf, "<i2").astype(np.float32) / 32768
            now = time.time()
            self.levels.append((now, float(np.sqrt(np.mean(pcm**2)))))
            if self.chunks is not None:
                self.chunks.append((now, pcm))

    def audio_between(self, start: float, end: float) -> np.ndarray:
        """The samples that arrived between two wall times (needs keep_audio)."""
        parts = [pcm for arrived, pcm in list(self.chunks or []) if start <= arrived < end]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def first_loud_after(self, t: float, threshold: float = 0.02) -> float | None:
        for arrived, rms in list(self.levels):
            if arrived >= t and rms > threshold:
                return arrived
        return None

    def quiet_since(self, seconds: float, threshold: float = 0.01) -> bool:
        now = time.time()
        recent = [rms for arrived, rms in list(self.levels) if arrived >= now - seconds]
        return bool(recent) and max(recent) < threshold

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def count_video_frames(url: str, wall_seconds: float) -> dict:
    """Pull for a fixed wall time and count the video frames that arrived (drops show as < 25 fps)."""
    proc = subprocess.Popen(["ffmpeg", "-v", "error", "-i", url, "-map", "0:v", "-c", "copy", "-f", "framemd5",
                             "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    times: list[float] = []

    def read():
        for line in proc.stdout:
            if not line.startswith("#"):
                times.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(wall_seconds)
    proc.kill()
    proc.wait()
    reader.join(timeout=2)
    # Skip the first second (connection start-up and the burst of buffered frames).
    if len(times) < 2:
        return {"frames": len(times), "fps": 0.0, "max_gap_ms": None}
    t0 = times[0] + 1.0
    steady = [t for t in times if t >= t0]
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    gaps = np.diff(steady) if len(steady) > 1 else np.array([0.0])
    return {"frames": len(times), "fps": round((len(steady) - 1) / span, 2) if span else 0.0,
            "max_gap_ms": round(float(gaps.max()) * 1000, 1)}
