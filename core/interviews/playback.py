"""The one place a pre-rendered clip enters a room's live stream.

The clip is queued as an utterance that names its speech (``audio``), its rendered video
(``clip``) and where the render began in the avatar's cycle. The stream worker sends the clip's
own frames (no second render) in the room's continuous RTMP session, continuing the cycle from
where the clip ends; it falls back to rendering the speech live if the video is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.rooms import Room, RoomStore, Utterance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRef:
    name: str  # tts/<name>.wav and lipsync/<name>.mp4
    audio: str  # owned reference of the clip's speech
    video: str  # owned reference of the rendered MP4
    duration_s: float
    source: str  # "question" or "stock"
    index: int  # question index, or the stock id 96..99
    avatar_id: str
    cycle_start: int | None = None  # the avatar cycle frame the render began at (lip-sync job result)
    cycle_end: int | None = None


def play_clip(store: RoomStore, room: Room, clip: ClipRef) -> Utterance:
    """Queue the clip in the room (played in order after what is already queued); returns the utterance."""
    utterance = store.say(room, audio=clip.audio, duration_s=clip.duration_s, clip=clip.video, clip_source=clip.source,
                          clip_index=clip.index, clip_cycle_start=clip.cycle_start, clip_cycle_end=clip.cycle_end)
    log.info("room %s: clip %s queued as utterance %s (%.2f s)", room.zbjname, clip.name, utterance.id,
             clip.duration_s)
    return utterance
