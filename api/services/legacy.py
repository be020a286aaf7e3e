"""What the old service's GET contracts do (api/routers/legacy.py keeps their shapes): enqueue, then
poll the job's status in Redis asynchronously for a bounded time, never blocking the event loop.
Errors are domain errors (core/errors.py); the API gives them the legacy `message` shape."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rq.job import JobStatus
from starlette.concurrency import run_in_threadpool

from api.services.files import owned_audio
from api.services.rooms import legacy_room
from api.services.speech import enqueue_asr, enqueue_tts
from core.errors import Failed, Invalid, Missing, NotReady
from core.jobs import ENDED, fetch_job, job_status_async
from core.rooms import RoomStore

if TYPE_CHECKING:
    from api.access import Caller


async def wait_for_job(aredis, job_id: str, timeout_s: float) -> str | None:
    """Poll the job's status field until it is terminal or the time is up; returns the status."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        status = await job_status_async(aredis, job_id)
        if status in ENDED or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def required(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise Missing("empty_parameter", f"parameter `{name}` must not be empty")
    return value.strip()


async def speech_file(settings, redis, aredis, text: str | None, caller: Caller) -> str:
    """`tests/<id>.wav` of the speech of `text`. As the old service did, the path is returned even if
    the file is not ready within the wait: the client polls GET /tests/<id>.wav (404 until it exists)."""
    job_id = await enqueue_tts(settings, redis, required(text, "msg"), owner=caller.owner)
    status = await wait_for_job(aredis, job_id, settings.legacy_wait_s)
    if status == JobStatus.FAILED:
        view = await run_in_threadpool(fetch_job, redis, job_id)
        reason = (view.error or {}).get("message", "speech synthesis failed") if view else "speech synthesis failed"
        raise Failed("tts_failed", reason, job_id=job_id)
    return f"tests/{job_id}.wav"


async def transcript(settings, redis, aredis, url: str | None, caller: Caller) -> str:
    """The text of a file this caller may use (Mandarin), waited for up to legacy_asr_wait_s."""
    job_id = await enqueue_asr(settings, redis, required(url, "url"), language="zh", caller=caller)
    status = await wait_for_job(aredis, job_id, settings.legacy_asr_wait_s)
    view = await run_in_threadpool(fetch_job, redis, job_id)
    if status == JobStatus.FINISHED and view is not None:
        return view.result["text"]
    if status == JobStatus.FAILED:
        reason = (view.error or {}).get("message", "recognition failed") if view else "recognition failed"
        raise Invalid("asr_failed", reason, job_id=job_id)
    raise NotReady("timeout", "recognition still running; poll /v1/jobs/" + job_id, job_id=job_id)


def speak_audio(settings, redis, zbjname: str | None, audio_url: str | None, caller: Caller) -> float:
    """Queue an owned audio file in the named room (or the default room); returns its duration."""
    if audio_url is None or not audio_url.strip():
        raise Missing("empty_parameter", "音频不可为空")
    # The audio first: a bad call must not open (or touch) a room.
    ref, duration = owned_audio(settings, audio_url.strip(), settings.max_lipsync_audio_s, redis=redis, caller=caller)
    store = RoomStore(redis, settings)
    store.say(legacy_room(store, zbjname, caller), audio=ref, duration_s=duration)
    return duration
