"""Expression feedback: legacy ``/bqfk`` (fire-and-forget) and ``/v1/feedback``.

The answer video is checked before it is queued (a file this service owns or an upload, with
video frames, within the length limit), so a bad request gets its JSON error at once; the
`feedback` worker writes the result to the SQL table.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, LegacyCallerDep, RedisDep, SettingsDep, require_api_key, require_legacy_access
from api.errors import ApiError
from api.schemas.feedback import MAX_INDEX, MS_ID_PATTERN, FeedbackList, FeedbackRow
from api.schemas.jobs import JobAccepted
from api.services.files import claim_file, owned_ref
from api.uploads import save_video_upload
from core.feedback.db import COMPONENTS, NotYours, owners, read_results
from core.files import resolve_owned
from core.jobs import Kind, enqueue, new_job_id
from core.media import MediaError, probe

legacy_router = APIRouter(tags=["legacy"], dependencies=[Depends(require_legacy_access)])
router = APIRouter(prefix="/v1/feedback", tags=["feedback"], dependencies=[Depends(require_api_key)])

_MS_ID = re.compile(MS_ID_PATTERN)


def check_answer_video(settings, ref: str, redis, caller) -> str:
    """The owned reference of a video with frames within the length limit, or the JSON error."""
    ref = owned_ref(settings, ref, redis=redis, caller=caller)
    try:
        info = probe(resolve_owned(settings, ref))
    except MediaError as exc:
        raise ApiError(422, "undecodable_video", "not a decodable video file") from exc
    if not info.has_video or info.still_image:
        raise ApiError(422, "no_frames", f"{ref} has no video frames; an answer must be a video of the candidate")
    if info.duration_s > settings.feedback_max_video_s:
        raise ApiError(422, "video_too_long", f"video is {info.duration_s:.1f} s; the limit is "
                       f"{settings.feedback_max_video_s:.0f} s")
    return ref


def check_interview(settings, ms_id: str, caller) -> None:
    """Another key's interview (its rows) reads as unknown, for reading and for replacing."""
    if not all(caller.may_use(owner) for owner in owners(settings, ms_id)):
        raise NotYours(ms_id)


async def enqueue_feedback(settings, redis, caller, ref: str, ms_id: str, index: int, language: str | None) -> str:
    if not _MS_ID.match(ms_id or ""):
        raise ApiError(422, "invalid_input", "msId may use letters, digits, '_', '.', ':', '-' (max 64)")
    if not 0 <= index <= MAX_INDEX:
        raise ApiError(422, "invalid_input", f"index must be from 0 to {MAX_INDEX}")
    await run_in_threadpool(check_interview, settings, ms_id, caller)
    ref = await run_in_threadpool(check_answer_video, settings, ref, redis, caller)
    job_id = new_job_id()
    kwargs = {"source": ref, "ms_id": ms_id, "index": index, "output_name": job_id, "language": language,
              **({"admin": True} if caller.admin else {})}
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.feedback, kwargs, job_id, owner=caller.owner))
    return job_id


def _legacy_param(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise ApiError(400, "empty_parameter", f"parameter `{name}` must not be empty")
    return value.strip()


@legacy_router.get("/bqfk", summary="Legacy: expression feedback on an answer video, stored in SQL (fire-and-forget)")
async def legacy_feedback(settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep,
                          url: str | None = Query(None, description="the answer video, e.g. tests/<id>.mp4"),
                          msId: str | None = Query(None, description="interview id"),  # noqa: N803
                          index: str | None = Query(None, description="question number")) -> dict:
    ref, ms_id, raw_index = _legacy_param(url, "url"), _legacy_param(msId, "msId"), _legacy_param(index, "index")
    try:
        number = int(raw_index)
    except ValueError:
        raise ApiError(422, "invalid_input", "index must be a whole number") from None
    await enqueue_feedback(settings, redis, caller, ref, ms_id, number, None)
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
    if file is not None and file.filename:
        path, _info = await save_video_upload(settings, file, settings.feedback_max_video_s)
        ref = await run_in_threadpool(claim_file, settings, redis, caller, path)
    elif source:
        ref = source
    else:
        raise ApiError(400, "missing_parameter", "give an uploaded `file` or a `source` reference")
    job_id = await enqueue_feedback(settings, redis, caller, ref, ms_id, index, language)
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/feedback?ms_id={ms_id}")


@router.get("", response_model=FeedbackList, summary="Stored feedback of an interview, by question")
async def list_feedback(settings: SettingsDep, caller: CallerDep,
                        ms_id: Annotated[str, Query(pattern=MS_ID_PATTERN)],
                        index: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None) -> FeedbackList:
    await run_in_threadpool(check_interview, settings, ms_id, caller)
    rows = await run_in_threadpool(read_results, settings, ms_id)
    results = [FeedbackRow(**row, components={c: row.get(c) for c in COMPONENTS})
               for row in rows if index is None or row["index"] == index]
    return FeedbackList(ms_id=ms_id, results=results)
