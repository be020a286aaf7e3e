from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.jobs import JobAccepted
from api.schemas.tts import TTSRequest
from api.services.speech import enqueue_tts

router = APIRouter(prefix="/v1/tts", tags=["tts"], dependencies=[Depends(require_api_key)])


@router.post("", status_code=202, response_model=JobAccepted, summary="Synthesise speech (WAV) from text")
async def create_tts(body: TTSRequest, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> JobAccepted:
    job_id = await enqueue_tts(settings, redis, body.text, body.voice, body.language, owner=caller.owner)
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/files/tts/{job_id}.wav")
