"""A client of a room's live audio input (WS /v1/rooms/{id}/audio), as a gateway or script would be:
streams PCM at the pace it is spoken and records every event it is sent, with the local time it came.
Used by bench.voice_latency and tests/test_voice.py."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

RATE = 16000


def to_pcm16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """float audio at any rate -> int16 at 16 kHz."""
    from scipy.signal import resample_poly

    audio = np.asarray(audio, np.float32)
    if rate != RATE:
        g = np.gcd(rate, RATE)
        audio = resample_poly(audio, RATE // g, rate // g).astype(np.float32)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


def last_voiced_s(pcm: np.ndarray, threshold: float = 0.02, window_s: float = 0.02) -> float:
    """Where the last window louder than `threshold` (RMS, full scale 1) ends, in seconds."""
    n = int(window_s * RATE)
    x = pcm.astype(np.float32) / 32768
    frames = x[: x.size - x.size % n].reshape(-1, n)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > threshold)
    return (loud[-1] + 1) * window_s if loud.size else 0.0


class VoiceClient:
    def __init__(self, ws_url: str, open_timeout: float = 10) -> None:
        self.ws = connect(ws_url, open_timeout=open_timeout, max_size=2 ** 22)
        self.events: list[dict] = []  # each with "_at": time.monotonic() when it arrived
        self.close_code: int | None = None
        self.close_reason = ""
        self.sent_s = 0.0  # audio sent, seconds
        self.started: float | None = None  # monotonic time the stream's first sample was "spoken"
        self.started_wall: float | None = None  # the same, wall clock
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for text in self.ws:
                event = json.loads(text)
                event["_at"], event["_wall"] = time.monotonic(), time.time()
                with self._lock:
                    self.events.append(event)
                    self._lock.notify_all()
        except ConnectionClosed:
            pass
        with self._lock:
            self.close_code = self.ws.close_code or 1006
            self.close_reason = self.ws.close_reason or ""
            self._lock.notify_all()

    def send_pcm(self, pcm: np.ndarray, frame_ms: int = 40, speed: float = 1.0) -> float:
        """Send int16 PCM in frames at `speed` x real time, each once its last sample has been "spoken"
        (as a microphone delivers them); returns the monotonic time the last frame left. Sample x of
        the stream is spoken at started + x / RATE / speed."""
        n = RATE * frame_ms // 1000
        if self.started is None:
            self.started, self.started_wall = time.monotonic(), time.time()
        for i in range(0, pcm.size, n):
            frame = pcm[i:i + n]
            if frame.size < n:
                frame = np.concatenate([frame, np.zeros(n - frame.size, "<i2")])
            due = self.started + (self.sent_s + n / RATE) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                self.ws.send(frame.astype("<i2").tobytes())
            except ConnectionClosed:
                break
            self.sent_s += n / RATE
        return time.monotonic()

    def send_json(self, obj: dict) -> None:
        self.ws.send(json.dumps(obj))

    def wait(self, predicate, timeout: float) -> dict | None:
        """The first event (in order) for which predicate(event) holds, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.close_code is not None:
                    return next((e for e in self.events if predicate(e)), None)
                self._lock.wait(left)

    def wait_event(self, name: str, timeout: float, **match) -> dict | None:
        return self.wait(lambda e: e.get("event") == name and all(e.get(k) == v for k, v in match.items()), timeout)

    def wait_closed(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.close_code is None and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            return self.close_code

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self._reader.join(timeout=5)
