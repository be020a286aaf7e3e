"""Avatars: prepare (upload or owned source, optional speech sample), list, read, delete, and the first
frame and face landmarks. The routes hold no logic of their own: api/services/avatars.py does it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.avatars import AvatarAccepted, AvatarFace, AvatarOut
from api.services import avatars as service
from api.services.avatars import check_avatar_access, check_reprepare, checked_sample, enqueue_preparation, read_avatar
from api.uploads import save_sample_upload, save_visual_upload, upload_or_source

router = APIRouter(prefix="/v1/avatars", tags=["avatars"], dependencies=[Depends(require_api_key)])


@router.post("", status_code=202, response_model=AvatarAccepted,
             summary="Prepare an avatar from a template video (mp4/mov/webm) or a portrait image")
async def create_avatar(
    settings: SettingsDep,
    redis: RedisDep,
    caller: CallerDep,
    file: Annotated[UploadFile | None, File(description="template video or portrait image")] = None,
    source: Annotated[str | None, Form(description="instead of an upload: a file the service owns")] = None,
    avatar_id: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")] = None,
    bbox_shift: Annotated[int, Form(ge=-50, le=50)] = 0,
    extra_margin: Annotated[int, Form(ge=0, le=60)] = 10,
    speech_sample: Annotated[UploadFile | None, File(
        description="a talking clip of the presenter with their own speech (2 s to 3 min); the avatar learns "
                    "their real mouth from it. Without it, a template video that speaks is used the same way")] = None,
    speech_sample_source: Annotated[str | None, Form(description="instead of an upload: an owned talking clip")] = None,
) -> AvatarAccepted:
    if avatar_id:
        await run_in_threadpool(check_reprepare, settings, redis, caller, avatar_id)
    ref = await upload_or_source(settings, file, source, save_visual_upload, redis=redis, caller=caller)
    sample = None
    if speech_sample is not None and speech_sample.filename:
        sample = await upload_or_source(settings, speech_sample, None, save_sample_upload, redis=redis, caller=caller)
    elif speech_sample_source:
        sample = await run_in_threadpool(checked_sample, settings, redis, caller, speech_sample_source)
    options = {"bbox_shift": bbox_shift, "extra_margin": extra_margin}
    return await run_in_threadpool(enqueue_preparation, settings, redis, caller, ref, avatar_id, options, sample)


@router.get("", response_model=list[AvatarOut], summary="Prepared avatars, newest first")
async def list_avatars(settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[AvatarOut]:
    return await run_in_threadpool(service.list_avatars, settings, redis, caller)


@router.get("/{avatar_id}", response_model=AvatarOut, summary="Status and metadata of an avatar")
async def get_avatar(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> AvatarOut:
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    return await run_in_threadpool(read_avatar, settings, redis, avatar_id)


@router.delete("/{avatar_id}", status_code=204, summary="Delete an avatar and its cache")
async def delete_avatar(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> None:
    await run_in_threadpool(service.delete_avatar, settings, redis, caller, avatar_id)


@router.get("/{avatar_id}/image", summary="The avatar's first frame as JPEG (a thumbnail with max_side)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def avatar_image(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep,
                max_side: Annotated[int, Query(ge=0, le=4096, description="0: full size")] = 256) -> Response:
    data = await run_in_threadpool(service.avatar_image, settings, redis, caller, avatar_id, max_side)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.get("/{avatar_id}/face", response_model=AvatarFace,
            summary="Mouth and jaw landmarks of the first frame, to animate the portrait without video")
async def avatar_face(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> AvatarFace:
    return await run_in_threadpool(service.avatar_face, settings, redis, caller, avatar_id)
