"""Lip-sync worker: avatar + speech -> MP4 (H.264 yuv420p + AAC, 25 fps, +faststart)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from redis import Redis
from rq import get_current_job

from avatars.store import Avatar
from core.files import resolve_owned
from core.jobs import set_progress
from core.media import MediaError, VideoWriter, decode_audio
from core.registry import CyclePositions
from core.settings import Settings, get_settings
from lipsync.engines import load_engine
from lipsync.mouth import SAMPLE_RATE, analyse, frame_count
from lipsync.visemes import load_phones, with_phones

log = logging.getLogger(__name__)

def load_speech(settings: Settings, path: Path) -> np.ndarray:
    audio = decode_audio(path, SAMPLE_RATE)
    duration = audio.size / SAMPLE_RATE
    if duration > settings.max_lipsync_audio_s:
        raise MediaError(f"audio is {duration:.1f} s; the limit is {settings.max_lipsync_audio_s:.0f} s")
    if duration < 0.2:
        raise MediaError("audio is shorter than 0.2 s")
    if float(np.sqrt(np.mean(audio**2))) < 10 ** (-60 / 20):
        raise MediaError("audio is silent")
    return audio


def start_position(redis: Redis | None, avatar: Avatar, room: str | None, cycle_start: int | None,
                   owner: str | None = None) -> int:
    """Where on the avatar's cycle a render begins: the caller's position, else where the room's
    previous utterance ended, else the template's first frame. A render without a room never reads
    shared state, so the same request gives the same video."""
    if cycle_start is not None:
        return int(cycle_start) % avatar.cycle_length
    if room is not None and redis is not None:
        return CyclePositions(redis).get(avatar.id, owner, room) % avatar.cycle_length
    return 0


def render_lipsync_video(avatar_id: str, output_name: str, audio: str | None = None,
                         tts_job_id: str | None = None, engine: str | None = None, room: str | None = None,
                         cycle_start: int | None = None) -> dict:
    """Job function of the `lipsync` queue. See `start_position` for where the render begins; a
    room's next utterance continues where this one ended."""
    settings = get_settings()
    job = get_current_job()
    source = resolve_owned(settings, audio if audio else f"tts/{tts_job_id}.wav")
    speech = load_speech(settings, source)
    avatar = Avatar.open(settings.data_dir, avatar_id)
    n = frame_count(speech.size, avatar.fps)
    renderer = load_engine(engine or settings.lipsync_engine, settings.models_dir, settings.lipsync_strength)
    name = renderer.choose(avatar).name if hasattr(renderer, "choose") else renderer.name
    redis: Redis | None = job.connection if job is not None else None
    owner = (job.meta or {}).get("owner") if job is not None else None
    start = start_position(redis, avatar, room, cycle_start, owner)
    out_dir = settings.kind_dir("lipsync")
    track = with_phones(analyse(speech, avatar.fps, n), load_phones(source))
    # The MP4 carries the source audio at its own quality; the 16 kHz decode only drives the mouth.
    writer = VideoWriter(out_dir / f"{output_name}.mp4", avatar.width, avatar.height, avatar.fps, audio=source,
                         crf=settings.video_crf)
    try:
        for k, frame in enumerate(renderer.frames(avatar, speech, start, n, track)):
            writer.write(frame)
            if k % 25 == 0:
                set_progress(job, 0.95 * k / n)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    end = (start + n) % avatar.cycle_length
    if redis is not None and room is not None:
        CyclePositions(redis).set(avatar_id, owner, room, end)
    mouth = out_dir / f"{output_name}.mouth.json"
    mouth.write_text(json.dumps({"fps": avatar.fps, "frames": track.as_series()}))
    return {
        "file": f"lipsync/{output_name}.mp4", "legacy_path": f"tests/{output_name}.mp4",
        "url": f"/v1/files/lipsync/{output_name}.mp4", "audio": audio or f"tts/{tts_job_id}.wav",
        "mouth_url": f"/v1/files/lipsync/{output_name}.mouth.json",
        "frames": n, "fps": avatar.fps, "duration_s": round(speech.size / SAMPLE_RATE, 3), "engine": name,
        "phones": track.closure is not None,  # the synthesis' own phone times drove the closures
        "avatar_id": avatar_id, "room": room, "cycle_start": start, "cycle_end": end,
    }


def warm_up(settings: Settings) -> None:
    load_engine(settings.lipsync_engine, settings.models_dir, settings.lipsync_strength)
