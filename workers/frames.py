"""What a room's publisher sends, frame by frame: frame sources and the one pacer that times them.

Sources:
* `IdleSource`: the avatar's pre-encoded idle loop, remuxed packet by packet from one of its
  keyframes on (no encoding), or encoded live until the loop exists.
* `SpeechSource`: one utterance's frames, from the live render or a pre-rendered clip, with its
  audio cut into one frame's worth of samples each.
Both write into the same RTMP session; `Continuity` carries what one must know of the other (a live
frame after remuxed packets must be a keyframe; remuxing may only begin at a loop keyframe).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from core import metrics
from core.live import FPS, RtmpSession

LEAD_S = 0.15  # how far ahead of real time frames are sent


class Pacer:
    """The stream clock: frame f goes out LEAD_S before t0 + f/FPS. Counts the frames sent after their
    time (metrics flushed once a second, cheap per frame)."""

    def __init__(self, room_id: str, stop_event: threading.Event) -> None:
        self.room_id, self.stop_event = room_id, stop_event
        self.t0_wall, self.t0 = time.time(), time.monotonic()
        self.f = 0
        self._sent = self._late = 0

    @property
    def stream_ts(self) -> float:
        return self.f / FPS

    def tick(self) -> None:
        """Frame f was sent: wait until frame f + 1 is due."""
        self.f += 1
        delay = self.t0 + self.f / FPS - LEAD_S - time.monotonic()
        self._sent += 1
        self._late += delay < -LEAD_S
        if self._sent >= FPS:
            self.flush()
        if delay > 0:
            self.stop_event.wait(delay)

    def flush(self) -> None:
        if self._sent:
            metrics.count("frames", metrics.room_label(self.room_id), amount=self._sent)
        if self._late:
            metrics.count("late", metrics.room_label(self.room_id), amount=self._late)
        self._sent = self._late = 0


@dataclass
class Continuity:
    remux: bool = False  # idle packets are being copied from the pre-encoded loop
    need_key: bool = True  # the next live-encoded frame must be a keyframe


class IdleSource:
    def __init__(self, loops, silence: np.ndarray) -> None:
        self.loops, self.silence = loops, silence

    def send(self, session: RtmpSession, avatar, cycle: int, f: int, c: Continuity) -> None:
        loop = self.loops.get(avatar.id)
        p = cycle % len(loop) if loop is not None else 0
        if not c.remux and loop is not None and loop.keyframes[p]:
            c.remux = True
        if c.remux:
            session.mux_video_packet(loop.packets[p], f, bool(loop.keyframes[p]))
            c.need_key = True
        else:
            session.encode_video(avatar.frame(cycle), f, keyframe=c.need_key)
            c.need_key = False
        session.push_audio(self.silence)


class SpeechSource:
    """One utterance being spoken: `k` frames sent of `n`."""

    def __init__(self, frames: Iterator[np.ndarray], pcm: np.ndarray, n: int, audio_rate: int) -> None:
        self.frames, self.pcm, self.n = frames, pcm, n
        self.per_frame = audio_rate // FPS
        self.k = 0

    def send(self, session: RtmpSession, f: int, c: Continuity) -> bool:
        """Send the next frame and its audio; False when the utterance has no frame left."""
        frame = next(self.frames, None)
        if frame is None:
            return False
        session.encode_video(frame, f, keyframe=c.need_key)
        c.need_key, c.remux = False, False
        pcm = self.pcm[self.k * self.per_frame:(self.k + 1) * self.per_frame]
        session.push_audio(np.pad(pcm, (0, self.per_frame - pcm.size)))
        self.k += 1
        return True
