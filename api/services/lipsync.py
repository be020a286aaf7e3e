"""Lip-sync renders as callers ask for them: the avatar, engine, cycle position and speech checked
before the job is queued (speech given as audio this caller may use, or as text synthesised first),
and a finished render's mouth series. Errors are domain errors (core/errors.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool
from rq.job import JobStatus

from api.schemas.avatars import AvatarOut
from api.schemas.jobs import JobAccepted
from api.schemas.lipsync import MouthSeries
from api.services.avatars import check_avatar_access, ready_avatar
from api.services.files import owned_audio
from api.services.jobs import load_job
from api.services.rooms import get_room
from api.services.speech import enqueue_tts
from api.uploads import save_audio_upload, save_owned
from core.errors import Conflict, Invalid, NotFound
from core.jobs import Kind, enqueue, new_job_id
from core.rooms import RoomStore

if TYPE_CHECKING:
    from api.access import Caller


def cycle_room(settings, redis, caller: Caller, room: str | None) -> str | None:
    """The room whose cycle the render continues: a live room's id, if it is one this caller may use
    (another key's reads as unknown); any other label stays the caller's own (the worker keys the
    cycle by the job's owner too)."""
    store = RoomStore(redis, settings)
    if not room or store.resolve(room) is None:
        return room
    return get_room(store, room, caller).id


def check_cycle_start(avatar: AvatarOut, cycle_start: int | None) -> None:
    """A caller's start position must lie on the avatar's cycle (clip then its reverse)."""
    length = int((avatar.manifest or {}).get("cycle_length", 0))
    if cycle_start is not None and not 0 <= cycle_start < length:
        raise Invalid("bad_cycle_start", f"cycle_start must be within 0..{length - 1} for avatar "
                      f"{avatar.id!r}", cycle_length=length)


def check_engine(settings, avatar: AvatarOut, engine: str | None) -> None:
    """The engine asked for (or configured) can render this avatar here."""
    if engine == "musetalk" or (engine is None and settings.lipsync_engine == "musetalk"):
        from models.weights import musetalk_missing

        missing = musetalk_missing(settings.models_dir)
        if missing:
            raise Invalid("engine_unavailable", "MuseTalk weights are not installed under models/", missing=missing)
    if engine == "exemplar" and not avatar.enrollment_current:
        raise Invalid("not_enrolled", f"avatar {avatar.id!r} has no talking footage to take its mouth from; "
                      "prepare it with a speech_sample, or use engine auto or warp")


async def enqueue_lipsync(settings, redis, caller: Caller, avatar_id: str, audio: str | None, text: str | None,
                          engine: str | None, room: str | None, cycle_start: int | None = None) -> JobAccepted:
    """Checks (avatar ready, cycle start, room, engine, then the speech) and queues the render, after
    a speech job when it is given as text."""
    avatar = await run_in_threadpool(ready_avatar, settings, redis, avatar_id)
    check_cycle_start(avatar, cycle_start)
    room = await run_in_threadpool(cycle_room, settings, redis, caller, room)
    check_engine(settings, avatar, engine)
    job_id = new_job_id()
    kwargs = {"avatar_id": avatar_id, "output_name": job_id, "engine": engine, "room": room}
    if cycle_start is not None:
        kwargs["cycle_start"] = cycle_start
    depends = None
    if audio:
        kwargs["audio"] = (await run_in_threadpool(lambda: owned_audio(settings, audio, settings.max_lipsync_audio_s,
                                                                       redis=redis, caller=caller)))[0]
    else:
        tts_id = await enqueue_tts(settings, redis, text or "", owner=caller.owner)
        kwargs["tts_job_id"] = tts_id
        depends = [tts_id]
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.lipsync, kwargs, job_id, depends, owner=caller.owner))
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/files/lipsync/{job_id}.mp4")


async def render(settings, redis, caller: Caller, avatar_id: str, audio: str | None, text: str | None,
                 engine: str | None, room: str | None, cycle_start: int | None) -> JobAccepted:
    """POST /v1/lipsync: another key's avatar reads as unknown before anything else is checked."""
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    return await enqueue_lipsync(settings, redis, caller, avatar_id, audio, text, engine, room, cycle_start)


async def render_upload(settings, redis, caller: Caller, avatar_id: str, upload: UploadFile, engine: str | None,
                        room: str | None, cycle_start: int | None) -> JobAccepted:
    """As render, with the speech uploaded: saved (and the caller's) once the avatar is known to be usable."""
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    ref, _path, _info = await save_owned(settings, upload, save_audio_upload, redis=redis, caller=caller)
    return await enqueue_lipsync(settings, redis, caller, avatar_id, ref, None, engine, room, cycle_start)


async def job_mouth(settings, redis, caller: Caller, job_id: str) -> MouthSeries:
    """The per-frame mouth series a finished lip-sync job of this caller's wrote."""
    view = await load_job(redis, job_id, caller=caller)
    if view.kind != Kind.lipsync.value:
        raise NotFound("not_found", "only lip-sync jobs have a mouth series")
    if view.status != JobStatus.FINISHED:
        raise Conflict("job_not_finished", f"job {job_id} is {view.status.value}")
    path = settings.data_dir / "lipsync" / f"{job_id}.mouth.json"
    return MouthSeries(**json.loads(await run_in_threadpool(path.read_text)))
