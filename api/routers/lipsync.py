from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool
from rq.job import JobStatus

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.errors import ApiError
from api.schemas.jobs import JobAccepted
from api.schemas.lipsync import LipSyncRequest, MouthSeries
from api.services.avatars import check_avatar_access, ready_avatar
from api.services.files import check_audio, claim_file, owned_ref
from api.services.jobs import load_job
from api.services.rooms import get_room
from api.services.speech import enqueue_tts
from api.uploads import save_audio_upload
from core.files import resolve_owned
from core.jobs import Kind, enqueue, new_job_id
from core.media import MediaError, probe
from core.rooms import RoomStore

router = APIRouter(tags=["lipsync"], dependencies=[Depends(require_api_key)])


def _cycle_room(settings, redis, caller, room: str | None) -> str | None:
    """The room whose cycle the render continues: a live room's id, if it is one this caller may use
    (another key's reads as unknown); any other label stays the caller's own (the worker keys the
    cycle by the job's owner too)."""
    store = RoomStore(redis, settings)
    if not room or store.resolve(room) is None:
        return room
    return get_room(store, room, caller).id


def check_cycle_start(avatar, cycle_start: int | None) -> None:
    """A caller's start position must lie on the avatar's cycle (clip then its reverse)."""
    length = int((avatar.manifest or {}).get("cycle_length", 0))
    if cycle_start is not None and not 0 <= cycle_start < length:
        raise ApiError(422, "bad_cycle_start", f"cycle_start must be within 0..{length - 1} for avatar "
                       f"{avatar.id!r}", cycle_length=length)


async def enqueue_lipsync(settings, redis, caller, avatar_id: str, audio: str | None, text: str | None,
                          engine: str | None, room: str | None, cycle_start: int | None = None) -> JobAccepted:
    avatar = await run_in_threadpool(ready_avatar, settings, redis, avatar_id)
    check_cycle_start(avatar, cycle_start)
    room = await run_in_threadpool(_cycle_room, settings, redis, caller, room)
    if engine == "musetalk" or (engine is None and settings.lipsync_engine == "musetalk"):
        from models.weights import musetalk_missing

        missing = musetalk_missing(settings.models_dir)
        if missing:
            raise ApiError(422, "engine_unavailable", "MuseTalk weights are not installed under models/",
                           missing=missing)
    if engine == "exemplar" and not avatar.enrollment_current:
        raise ApiError(422, "not_enrolled", f"avatar {avatar_id!r} has no talking footage to take its mouth from; "
                       "prepare it with a speech_sample, or use engine auto or warp")
    job_id = new_job_id()
    kwargs = {"avatar_id": avatar_id, "output_name": job_id, "engine": engine, "room": room}
    if cycle_start is not None:
        kwargs["cycle_start"] = cycle_start
    depends = None
    if audio:
        ref = await run_in_threadpool(lambda: owned_ref(settings, audio, redis=redis, caller=caller))
        try:
            info = await run_in_threadpool(probe, resolve_owned(settings, ref))
        except MediaError as exc:
            raise ApiError(422, "undecodable_audio", "not a decodable audio file") from exc
        check_audio(info, settings.max_lipsync_audio_s)
        kwargs["audio"] = ref
    else:
        tts_id = await enqueue_tts(settings, redis, text or "", owner=caller.owner)
        kwargs["tts_job_id"] = tts_id
        depends = [tts_id]
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.lipsync, kwargs, job_id, depends, owner=caller.owner))
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/files/lipsync/{job_id}.mp4")


@router.post("/v1/lipsync", status_code=202, response_model=JobAccepted,
             summary="Render a lip-synced MP4 of an avatar speaking audio (or text, synthesised first)")
async def create_lipsync(body: LipSyncRequest, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> JobAccepted:
    await run_in_threadpool(check_avatar_access, settings, redis, caller, body.avatar_id)
    return await enqueue_lipsync(settings, redis, caller, body.avatar_id, body.audio, body.text, body.engine,
                                 body.room, body.cycle_start)


@router.post("/v1/lipsync/upload", status_code=202, response_model=JobAccepted,
             summary="As POST /v1/lipsync, with the speech uploaded in the same request")
async def create_lipsync_upload(
    settings: SettingsDep,
    redis: RedisDep,
    caller: CallerDep,
    avatar_id: Annotated[str, Form(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")],
    audio: Annotated[UploadFile, File()],
    engine: Annotated[Literal["auto", "exemplar", "warp", "musetalk"] | None, Form()] = None,
    room: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9_*.-]{1,128}$")] = None,
    cycle_start: Annotated[int | None, Form(ge=0, description="as in POST /v1/lipsync")] = None,
) -> JobAccepted:
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    path, _info = await save_audio_upload(settings, audio)
    ref = await run_in_threadpool(claim_file, settings, redis, caller, path)
    return await enqueue_lipsync(settings, redis, caller, avatar_id, ref, None, engine, room, cycle_start)


@router.get("/v1/jobs/{job_id}/mouth", response_model=MouthSeries, tags=["jobs"],
            summary="Per-frame mouth series of a finished lip-sync job, to animate a face without video")
async def job_mouth(job_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> MouthSeries:
    view = await load_job(redis, job_id, caller=caller)
    if view.kind != Kind.lipsync.value:
        raise ApiError(404, "not_found", "only lip-sync jobs have a mouth series")
    if view.status != JobStatus.FINISHED:
        raise ApiError(409, "job_not_finished", f"job {job_id} is {view.status.value}")
    path = settings.data_dir / "lipsync" / f"{job_id}.mouth.json"
    return MouthSeries(**json.loads(await run_in_threadpool(path.read_text)))
