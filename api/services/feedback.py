"""Expression feedback as callers ask for it: the answer video checked before it is queued (a file
this caller may use, with video frames, within the length limit), so a bad request gets its error at
once; the interview's rows read and replaced only by their owner. The `feedback` worker writes the
result to the SQL table. Errors are domain errors (core/errors.py)."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from api.schemas.feedback import MAX_INDEX, MS_ID_PATTERN, FeedbackList, FeedbackRow
from api.schemas.jobs import JobAccepted
from api.services.files import probed_ref
from api.uploads import save_owned, save_video_upload
from core.errors import Invalid, Missing
from core.feedback.db import COMPONENTS, NotYours, owners, read_results
from core.jobs import Kind, enqueue, new_job_id

if TYPE_CHECKING:
    from api.access import Caller

_MS_ID = re.compile(MS_ID_PATTERN)


def check_answer_video(settings, redis, caller: Caller, ref: str) -> str:
    """The owned reference of a video with frames within the length limit."""
    ref, info = probed_ref(settings, ref, ("undecodable_video", "not a decodable video file"), redis=redis,
                           caller=caller)
    if not info.has_video or info.still_image:
        raise Invalid("no_frames", f"{ref} has no video frames; an answer must be a video of the candidate")
    if info.duration_s > settings.feedback_max_video_s:
        raise Invalid("video_too_long", f"video is {info.duration_s:.1f} s; the limit is "
                      f"{settings.feedback_max_video_s:.0f} s")
    return ref


def check_interview(settings, ms_id: str, caller: Caller) -> None:
    """Another key's interview (its rows) reads as unknown, for reading and for replacing."""
    if not all(caller.may_use(owner) for owner in owners(settings, ms_id)):
        raise NotYours(ms_id)


def check_question(ms_id: str, index: int) -> None:
    if not _MS_ID.match(ms_id or ""):
        raise Invalid("invalid_input", "msId may use letters, digits, '_', '.', ':', '-' (max 64)")
    if not 0 <= index <= MAX_INDEX:
        raise Invalid("invalid_input", f"index must be from 0 to {MAX_INDEX}")


async def enqueue_feedback(settings, redis, caller: Caller, ref: str, ms_id: str, index: int,
                           language: str | None) -> JobAccepted:
    """Checks the question, the interview's owner and the answer video (in that order), then queues."""
    check_question(ms_id, index)
    await run_in_threadpool(check_interview, settings, ms_id, caller)
    ref = await run_in_threadpool(check_answer_video, settings, redis, caller, ref)
    job_id = new_job_id()
    kwargs = {"source": ref, "ms_id": ms_id, "index": index, "output_name": job_id, "language": language,
              **({"admin": True} if caller.admin else {})}
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.feedback, kwargs, job_id, owner=caller.owner))
    return JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", result_url=f"/v1/feedback?ms_id={ms_id}")


def _legacy_param(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise Missing("empty_parameter", f"parameter `{name}` must not be empty")
    return value.strip()


def legacy_question(url: str | None, ms_id: str | None, index: str | None) -> tuple[str, str, int]:
    """(answer reference, interview id, question number) of a legacy /bqfk call; each must be given."""
    ref, ms_id, raw_index = _legacy_param(url, "url"), _legacy_param(ms_id, "msId"), _legacy_param(index, "index")
    try:
        return ref, ms_id, int(raw_index)
    except ValueError:
        raise Invalid("invalid_input", "index must be a whole number") from None


async def answer_ref(settings, redis, caller: Caller, upload: UploadFile | None, source: str | None) -> str:
    """The answer video's reference: an upload (checked, saved and recorded as the caller's), or the
    reference given instead (checked with the rest by enqueue_feedback)."""
    if upload is not None and upload.filename:
        saver = partial(save_video_upload, max_s=settings.feedback_max_video_s)
        return (await save_owned(settings, upload, saver, redis=redis, caller=caller))[0]
    if not source:
        raise Missing("missing_parameter", "give an uploaded `file` or a `source` reference")
    return source


def list_feedback(settings, caller: Caller, ms_id: str, index: int | None) -> FeedbackList:
    """The interview's stored rows (all questions, or one), if they are the caller's."""
    check_interview(settings, ms_id, caller)
    rows = read_results(settings, ms_id)
    results = [FeedbackRow(**row, components={c: row.get(c) for c in COMPONENTS})
               for row in rows if index is None or row["index"] == index]
    return FeedbackList(ms_id=ms_id, results=results)
