from __future__ import annotations

import re
import shutil
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, SettingsDep, require_api_key
from api.errors import ApiError
from api.schemas.avatars import AvatarAccepted, AvatarOut
from api.uploads import check_sample, owned_ref, save_sample_upload, save_visual_upload, upload_or_source
from core.files import resolve_owned
from core.media import MediaError, probe
from core.jobs import Kind, Status, enqueue, fetch_job, new_job_id

router = APIRouter(prefix="/v1/avatars", tags=["avatars"], dependencies=[Depends(require_api_key)])

AVATAR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
JOB_KEY = "mtl:avatar-job:{}"


def _dir(settings, avatar_id: str):
    if not AVATAR_ID.match(avatar_id):
        raise ApiError(404, "unknown_avatar", f"no avatar {avatar_id!r}")
    return settings.data_dir / "avatars" / avatar_id


def read_avatar(settings, redis, avatar_id: str) -> AvatarOut:
    import json

    path = _dir(settings, avatar_id)
    raw_job = redis.get(JOB_KEY.format(avatar_id))
    view = fetch_job(redis, raw_job.decode()) if raw_job else None
    prepared = (path / "avatar.json").is_file()
    # A failed re-preparation leaves the prepared avatar in place: it stays ready, with the error.
    if view is not None and view.status not in (Status.finished,) and not (view.status == Status.failed and prepared):
        return AvatarOut(id=avatar_id, status=view.status.value, job_id=view.id, progress=view.progress,
                         error=view.error)
    manifest_path = path / "avatar.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        manifest.pop("cache_key", None)
        enrolled = path / "mouth" / "enrollment.json"  # avatars/mouthbank.py writes it
        manifest["enrollment"] = json.loads(enrolled.read_text()) if enrolled.is_file() else None
        return AvatarOut(id=avatar_id, status="ready", job_id=view.id if view else None, progress=1.0,
                         manifest=manifest, error=view.error if view else None)
    raise ApiError(404, "unknown_avatar", f"no avatar {avatar_id!r}")


@router.post("", status_code=202, response_model=AvatarAccepted,
             summary="Prepare an avatar from a template video (mp4/mov/webm) or a portrait image")
async def create_avatar(
    settings: SettingsDep,
    redis: RedisDep,
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
    ref = await upload_or_source(settings, file, source, save_visual_upload)
    sample = await _sample_ref(settings, speech_sample, speech_sample_source)
    avatar_id = avatar_id or f"av-{uuid.uuid4().hex[:12]}"
    job_id = new_job_id()
    kwargs = {"source": ref, "avatar_id": avatar_id, "options": {"bbox_shift": bbox_shift, "extra_margin": extra_margin},
              "speech_sample": sample}
    await run_in_threadpool(enqueue, settings, redis, Kind.avatar, kwargs, job_id)
    await run_in_threadpool(redis.set, JOB_KEY.format(avatar_id), job_id, ex=settings.result_ttl_s)
    return AvatarAccepted(avatar_id=avatar_id, job_id=job_id, status_url=f"/v1/jobs/{job_id}",
                          avatar_url=f"/v1/avatars/{avatar_id}")


async def _sample_ref(settings, upload: UploadFile | None, source: str | None) -> str | None:
    """The checked speech sample's reference, or None when none was given."""
    if upload is not None and upload.filename:
        return await upload_or_source(settings, upload, None, save_sample_upload)
    if not source:
        return None
    ref = owned_ref(settings, source)
    try:
        info = await run_in_threadpool(probe, resolve_owned(settings, ref))
    except MediaError as exc:
        raise ApiError(422, "sample_undecodable", "the speech sample is not a decodable video") from exc
    check_sample(info, settings)
    return ref


@router.get("", response_model=list[AvatarOut], summary="Prepared avatars")
async def list_avatars(settings: SettingsDep, redis: RedisDep) -> list[AvatarOut]:
    root = settings.data_dir / "avatars"
    ids = sorted(p.name for p in root.iterdir() if (p / "avatar.json").is_file()) if root.is_dir() else []
    return [await run_in_threadpool(read_avatar, settings, redis, i) for i in ids]


@router.get("/{avatar_id}", response_model=AvatarOut, summary="Status and metadata of an avatar")
async def get_avatar(avatar_id: str, settings: SettingsDep, redis: RedisDep) -> AvatarOut:
    return await run_in_threadpool(read_avatar, settings, redis, avatar_id)


@router.delete("/{avatar_id}", status_code=204, summary="Delete an avatar and its cache")
async def delete_avatar(avatar_id: str, settings: SettingsDep, redis: RedisDep) -> None:
    path = _dir(settings, avatar_id)
    existed = path.is_dir() or bool(await run_in_threadpool(redis.delete, JOB_KEY.format(avatar_id)))
    if not existed:
        raise ApiError(404, "unknown_avatar", f"no avatar {avatar_id!r}")
    await run_in_threadpool(shutil.rmtree, path, True)
