from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, SettingsDep, require_api_key
from api.errors import ApiError
from api.schemas.jobs import JobAccepted
from api.uploads import save_audio_upload
from core.files import NotOwnedError, public_ref, resolve_owned
from core.jobs import Kind, enqueue, new_job_id

router = APIRouter(prefix="/v1/asr", tags=["asr"], dependencies=[Depends(require_api_key)])


def owned_ref(settings, ref: str) -> str:
    try:
        return public_ref(settings, resolve_owned(settings, ref))
    except NotOwnedError as exc:
        raise ApiError(404, "file_not_owned", str(exc)) from exc


async def enqueue_asr(settings, redis, ref: str, language: str | None = None) -> str:
    job_id = new_job_id()
    kwargs = {"file": owned_ref(settings, ref), "output_name": job_id, "language": language}
    await run_in_threadpool(enqueue, settings, redis, Kind.asr, kwargs, job_id)
    return job_id


@router.post("", status_code=202, response_model=JobAccepted,
             summary="Transcribe an uploaded audio/video file or a file the service owns")
async def create_asr(
    settings: SettingsDep,
    redis: RedisDep,
    file: Annotated[UploadFile | None, File(description="audio or video with an audio track")] = None,
    source: Annotated[str | None, Form(description="instead of an upload: e.g. tests/<id>.wav")] = None,
    language: Annotated[Literal["zh", "en"] | None, Form()] = None,
) -> JobAccepted:
    if file is not None and file.filename:
        path, _info = await save_audio_upload(settings, file)
        ref = public_ref(settings, path)
    elif source:
        ref = source
    else:
        raise ApiError(400, "missing_parameter", "give an uploaded `file` or a `source` reference")
    job_id = await enqueue_asr(settings, redis, ref, language)
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/files/asr/{job_id}.json")
