"""Expression feedback: legacy ``/bqfk`` (fire-and-forget) and ``/v1/feedback``. The routes hold no
logic of their own: api/services/feedback.py checks the answer video and the interview's owner
before the job is queued, and reads the stored rows."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, LegacyCallerDep, RedisDep, SettingsDep, require_api_key, require_legacy_access
from api.schemas.feedback import MAX_INDEX, MS_ID_PATTERN, FeedbackList
from api.schemas.jobs import JobAccepted
from api.services import feedback as service

legacy_router = APIRouter(tags=["legacy"], dependencies=[Depends(require_legacy_access)])
router = APIRouter(prefix="/v1/feedback", tags=["feedback"], dependencies=[Depends(require_api_key)])


@legacy_router.get("/bqfk", summary="Legacy: expression feedback on an answer video, stored in SQL (fire-and-forget)")
async def legacy_feedback(settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep,
                          url: str | None = Query(None, description="the answer video, e.g. tests/<id>.mp4"),
                          msId: str | None = Query(None, description="interview id"),  # noqa: N803
                          index: str | None = Query(None, description="question number")) -> dict:
    ref, ms_id, number = service.legacy_question(url, msId, index)
    await service.enqueue_feedback(settings, redis, caller, ref, ms_id, number, None)
    return {"message": "success"}


@router.post("", status_code=202, response_model=JobAccepted,
             summary="Expression feedback on an answer video (uploaded, or a file the service owns)")
async def create_feedback(
    settings: SettingsDep,
    redis: RedisDep,
    caller: CallerDep,
    ms_id: Annotated[str, Form(pattern=MS_ID_PATTERN)],
    index: Annotated[int, Form(ge=0, le=MAX_INDEX)],
    file: Annotated[UploadFile | None, File(description="the answer video")] = None,
    source: Annotated[str | None, Form(description="instead of an upload: e.g. tests/<id>.mp4")] = None,
    language: Annotated[Literal["zh", "en"] | None, Form()] = None,
) -> JobAccepted:
    ref = await service.answer_ref(settings, redis, caller, file, source)
    return await service.enqueue_feedback(settings, redis, caller, ref, ms_id, index, language)


@router.get("", response_model=FeedbackList, summary="Stored feedback of an interview, by question")
async def list_feedback(settings: SettingsDep, caller: CallerDep,
                        ms_id: Annotated[str, Query(pattern=MS_ID_PATTERN)],
                        index: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None) -> FeedbackList:
    return await run_in_threadpool(service.list_feedback, settings, caller, ms_id, index)
