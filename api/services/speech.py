"""Speech jobs: text to speech and speech to text, enqueued for the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from api.services.files import owned_ref
from core.errors import Invalid, Missing
from core.jobs import Kind, enqueue, new_job_id

if TYPE_CHECKING:
    from api.access import Caller


def check_text(settings, text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise Missing("empty_parameter", "text must not be empty")
    if len(text) > settings.max_text_chars:
        raise Invalid("text_too_long", f"text has {len(text)} characters; the limit is {settings.max_text_chars}")
    return text


async def enqueue_tts(settings, redis, text: str, voice: str | None = None, language: str | None = None, *,
                      owner: str | None, room_id: str | None = None) -> str:
    """`owner`: the hash of the caller's key (its job and file), None for shared work; `room_id`: the
    live room that will speak it (its publisher is woken when the speech is written)."""
    job_id = new_job_id()
    kwargs = {"text": check_text(settings, text), "output_name": job_id, "voice": voice, "language": language}
    if room_id:
        kwargs["room_id"] = room_id
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.tts, kwargs, job_id, owner=owner))
    return job_id


async def enqueue_asr(settings, redis, ref: str, language: str | None = None, *, caller: Caller | None) -> str:
    """Recognition of a file this caller may use."""
    job_id = new_job_id()
    ref = await run_in_threadpool(lambda: owned_ref(settings, ref, redis=redis, caller=caller))
    kwargs = {"file": ref, "output_name": job_id, "language": language}
    owner = caller.owner if caller is not None else None
    await run_in_threadpool(lambda: enqueue(settings, redis, Kind.asr, kwargs, job_id, owner=owner))
    return job_id
