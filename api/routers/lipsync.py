"""Lip-sync renders (speech given, uploaded or synthesised from text) and a render's mouth series.
The routes hold no logic of their own: api/services/lipsync.py checks and queues."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.jobs import JobAccepted
from api.schemas.lipsync import LipSyncRequest, MouthSeries
from api.services import lipsync as service

router = APIRouter(tags=["lipsync"], dependencies=[Depends(require_api_key)])


@router.post("/v1/lipsync", status_code=202, response_model=JobAccepted,
             summary="Render a lip-synced MP4 of an avatar speaking audio (or text, synthesised first)")
async def create_lipsync(body: LipSyncRequest, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> JobAccepted:
    return await service.render(settings, redis, caller, body.avatar_id, body.audio, body.text, body.engine,
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
    return await service.render_upload(settings, redis, caller, avatar_id, audio, engine, room, cycle_start)


@router.get("/v1/jobs/{job_id}/mouth", response_model=MouthSeries, tags=["jobs"],
            summary="Per-frame mouth series of a finished lip-sync job, to animate a face without video")
async def job_mouth(job_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> MouthSeries:
    return await service.job_mouth(settings, redis, caller, job_id)
