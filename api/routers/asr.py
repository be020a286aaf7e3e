from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.jobs import JobAccepted
from api.services.speech import enqueue_asr
from api.uploads import save_audio_upload, upload_or_source

router = APIRouter(prefix="/v1/asr", tags=["asr"], dependencies=[Depends(require_api_key)])


@router.post("", status_code=202, response_model=JobAccepted,
             summary="Transcribe an uploaded audio/video file or a file the service owns")
async def create_asr(
    settings: SettingsDep,
    redis: RedisDep,
    caller: CallerDep,
    file: Annotated[UploadFile | None, File(description="audio or video with an audio track")] = None,
    source: Annotated[str | None, Form(description="instead of an upload: e.g. tests/<id>.wav")] = None,
    language: Annotated[Literal["zh", "en"] | None, Form()] = None,
) -> JobAccepted:
    ref = await upload_or_source(settings, file, source, save_audio_upload, redis=redis, caller=caller)
    job_id = await enqueue_asr(settings, redis, ref, language, caller=caller)
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/files/asr/{job_id}.json")
