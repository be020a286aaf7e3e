from __future__ import annotations

import shutil
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.errors import ApiError
from api.schemas.avatars import AvatarAccepted, AvatarFace, AvatarOut
from api.services.avatars import (avatar_dir, avatar_owners, check_avatar_access, claim_avatar, forget_avatar,
                                  note_avatar_job, read_avatar)
from api.services.files import owned_ref
from api.uploads import check_sample, save_sample_upload, save_visual_upload, upload_or_source
from core.errors import NotFound
from core.files import resolve_owned
from core.media import MediaError, probe
from core.jobs import Kind, enqueue, new_job_id

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
        try:
            await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id, True)
        except NotFound as exc:  # re-preparing another key's avatar: refused, not "unknown"
            raise ApiError(403, "not_owner", f"avatar {avatar_id!r} belongs to another API key") from exc
    ref = await upload_or_source(settings, file, source, save_visual_upload, redis=redis, caller=caller)
    sample = await _sample_ref(settings, redis, caller, speech_sample, speech_sample_source)
    avatar_id = avatar_id or f"av-{uuid.uuid4().hex[:12]}"
    # The key that makes a new avatar owns it; re-preparing keeps the owner (or keeps a shared one shared).
    if caller.owner is not None and not avatar_dir(settings, avatar_id).exists():
        await run_in_threadpool(claim_avatar, redis, avatar_id, caller.owner)
    job_id = new_job_id()
    kwargs = {"source": ref, "avatar_id": avatar_id, "options": {"bbox_shift": bbox_shift, "extra_margin": extra_margin},
              "speech_sample": sample}
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.avatar, kwargs, job_id, owner=caller.owner))
    await run_in_threadpool(note_avatar_job, redis, avatar_id, job_id, settings.result_ttl_s)
    return AvatarAccepted(avatar_id=avatar_id, job_id=job_id, status_url=f"/v1/jobs/{job_id}",
                          avatar_url=f"/v1/avatars/{avatar_id}")


async def _sample_ref(settings, redis, caller, upload: UploadFile | None, source: str | None) -> str | None:
    """The checked speech sample's reference, or None when none was given."""
    if upload is not None and upload.filename:
        return await upload_or_source(settings, upload, None, save_sample_upload, redis=redis, caller=caller)
    if not source:
        return None
    ref = await run_in_threadpool(lambda: owned_ref(settings, source, redis=redis, caller=caller))
    try:
        info = await run_in_threadpool(probe, resolve_owned(settings, ref))
    except MediaError as exc:
        raise ApiError(422, "sample_undecodable", "the speech sample is not a decodable video") from exc
    check_sample(info, settings)
    return ref


@router.get("", response_model=list[AvatarOut], summary="Prepared avatars, newest first")
async def list_avatars(settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[AvatarOut]:
    root = settings.data_dir / "avatars"
    ids = sorted(p.name for p in root.iterdir() if (p / "avatar.json").is_file()) if root.is_dir() else []
    owners = await run_in_threadpool(avatar_owners, redis)
    ids = [i for i in ids if caller.may_use(owners.get(i))]
    avatars = [await run_in_threadpool(read_avatar, settings, redis, i) for i in ids]
    # Newest first (one being prepared counts as newest): what an operator just made is what they pick.
    return sorted(avatars, key=lambda a: a.prepared_at if a.prepared_at is not None else float("inf"), reverse=True)


@router.get("/{avatar_id}", response_model=AvatarOut, summary="Status and metadata of an avatar")
async def get_avatar(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> AvatarOut:
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    return await run_in_threadpool(read_avatar, settings, redis, avatar_id)


@router.delete("/{avatar_id}", status_code=204, summary="Delete an avatar and its cache")
async def delete_avatar(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> None:
    path = avatar_dir(settings, avatar_id)
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id, True)
    existed = path.is_dir()
    await run_in_threadpool(shutil.rmtree, path, True)  # the files first: never an avatar without its owner
    if not (await run_in_threadpool(forget_avatar, redis, avatar_id) or existed):
        raise ApiError(404, "unknown_avatar", f"no avatar {avatar_id!r}")


def _prepared(settings, avatar_id: str):
    path = avatar_dir(settings, avatar_id)
    if not (path / "avatar.json").is_file():
        raise ApiError(404, "unknown_avatar", f"no prepared avatar {avatar_id!r}")
    return path


def _image_bytes(path, max_side: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    with Image.open(path) as img:
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=88)
        return out.getvalue()


@router.get("/{avatar_id}/image", summary="The avatar's first frame as JPEG (a thumbnail with max_side)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def avatar_image(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep,
                       max_side: Annotated[int, Query(ge=0, le=4096, description="0: full size")] = 256) -> Response:
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    frame = _prepared(settings, avatar_id) / "frames" / "000000.jpg"
    if not frame.is_file():
        raise ApiError(404, "unknown_avatar", f"avatar {avatar_id!r} has no frames")
    data = await run_in_threadpool(_image_bytes, frame, max_side)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.get("/{avatar_id}/face", response_model=AvatarFace,
            summary="Mouth and jaw landmarks of the first frame, to animate the portrait without video")
async def avatar_face(avatar_id: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> AvatarFace:
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    path = _prepared(settings, avatar_id)

    def load() -> AvatarFace:
        import json

        import numpy as np

        from avatars import face

        manifest = json.loads((path / "avatar.json").read_text())
        points = np.load(path / "landmarks.npy", mmap_mode="r")[0]

        def pt(i: int) -> tuple[float, float]:
            return round(float(points[i][0]), 1), round(float(points[i][1]), 1)

        return AvatarFace(
            width=int(manifest["width"]), height=int(manifest["height"]), fps=int(manifest.get("fps", 25)),
            mouth_left=pt(face.MOUTH_LEFT), mouth_right=pt(face.MOUTH_RIGHT), upper_inner=pt(face.LIP_UPPER_IN),
            lower_inner=pt(face.LIP_LOWER_IN), upper_outer=pt(face.LIPS_OUTER[15]), lower_outer=pt(face.LIPS_OUTER[5]),
            chin=pt(face.CHIN), nose_tip=pt(face.NOSE_TIP), lips_outer=[pt(i) for i in face.LIPS_OUTER],
            jaw=[pt(i) for i in face.JAW])

    return await run_in_threadpool(load)
