from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, SettingsDep, require_api_key
from api.errors import ApiError
from api.schemas.jobs import JobAccepted
from api.schemas.tts import TTSRequest
from core.jobs import Kind, enqueue, new_job_id

router = APIRouter(prefix="/v1/tts", tags=["tts"], dependencies=[Depends(require_api_key)])


def check_text(settings, text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ApiError(400, "empty_parameter", "text must not be empty")
    if len(text) > settings.max_text_chars:
        raise ApiError(422, "text_too_long", f"text has {len(text)} characters; the limit is {settings.max_text_chars}")
    return text


async def enqueue_tts(settings, redis, text: str, voice: str | None = None, language: str | None = None) -> str:
    job_id = new_job_id()
    kwargs = {"text": check_text(settings, text), "output_name": job_id, "voice": voice, "language": language}
    await run_in_threadpool(enqueue, settings, redis, Kind.tts, kwargs, job_id)
    return job_id


@router.post("", status_code=202, response_model=JobAccepted, summary="Synthesise speech (WAV) from text")
async def create_tts(body: TTSRequest, settings: SettingsDep, redis: RedisDep) -> JobAccepted:
    job_id = await enqueue_tts(settings, redis, body.text, body.voice, body.language)
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/files/tts/{job_id}.wav")
