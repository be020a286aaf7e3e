"""Interviews as callers use them: creating one (questions, room, render chains), reading it with its
clips' progress, and playing a clip in a room.

Creating generates the questions (bank or LLM), opens the room at once (it publishes its idle loop)
and enqueues each question's render chain. Playing resolves a clip (a question index or a stock id
96..99), waits a bounded time for one still rendering, polling Redis asynchronously, then hands it
to :func:`core.interviews.playback.play_clip`. Errors are domain errors (core/errors.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import TYPE_CHECKING

from rq.job import JobStatus
from starlette.concurrency import run_in_threadpool

from api.schemas.interviews import FileRefs, InterviewOut, QuestionOut, StockClipOut
from api.services.avatars import avatar_owner, check_avatar_access, read_avatar, ready_avatar
from api.services.rooms import create_room
from core.errors import Failed, Invalid, Missing, NotFound, NotReady, Unavailable, UpstreamFailed
from core.interviews import MAX_QUESTIONS, STOCK_IDS
from core.interviews.generators import GeneratorError, check_request, load_generator
from core.interviews.playback import ClipRef, play_clip
from core.interviews.store import (CLAIM_GRACE_S, Clip, ClipStatus, Interview, InterviewStore, admit_chains,
                                   clip_paths, clip_state)
from core.jobs import GAVE_UP, fetch_job, job_status_async
from core.media import MediaError, probe
from core.rooms import Room, RoomStore, Utterance

if TYPE_CHECKING:
    from api.access import Caller

# What a question generator's refusal is, by its code (anything else: the request is unusable).
GENERATOR_ERRORS = {"empty_parameter": Missing, "llm_not_configured": Unavailable, "llm_unavailable": UpstreamFailed}


def job_language(job: str, default: str) -> str:
    if any("\u3400" <= ch <= "\u9fff" for ch in job):
        return "zh"
    return "en" if any(ch.isascii() and ch.isalpha() for ch in job) else default


async def create_interview(settings, redis, job: str | None, count: int, username: str | None = None,
                           language: str | None = None, avatar_id: str | None = None,
                           ttl_s: int | None = None, caller: Caller | None = None) -> Interview:
    avatar_id = avatar_id or settings.demo_avatar_id
    await run_in_threadpool(check_avatar_access, settings, redis, caller, avatar_id)
    try:
        job = check_request(job, count)
        # The avatar is checked before the (possibly slow) generator, the room opened after it:
        # a request that fails leaves no room behind.
        await run_in_threadpool(ready_avatar, settings, redis, avatar_id)
        language = language or job_language(job, settings.interview_default_language)
        questions = await run_in_threadpool(lambda: load_generator(settings).generate(job, count, language))
    except GeneratorError as exc:
        raise GENERATOR_ERRORS.get(exc.code, Invalid)(exc.code, str(exc)) from exc
    await run_in_threadpool(admit_chains, settings, redis)
    # The room speaks and hears the interview's language, and its script asks about the job.
    room = await run_in_threadpool(lambda: create_room(settings, redis, username, avatar_id, ttl_s, caller,
                                                       language=language, job=job))
    store = InterviewStore(redis, settings)
    owner = caller.owner if caller is not None else None
    return await run_in_threadpool(store.create, room, job, language, count, questions, avatar_id, owner)


def legacy_count(value: str | None, default: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise Invalid("invalid_count", f"`count` must be a whole number from 1 to {MAX_QUESTIONS}") from None


def _refs(kind: str, name: str, ext: str, job_id: str | None) -> FileRefs:
    return FileRefs(file=f"{kind}/{name}.{ext}", legacy_path=f"tests/{name}.{ext}",
                    url=f"/v1/files/{kind}/{name}.{ext}", job_id=job_id)


def interview_out(settings, redis, record: Interview) -> InterviewOut:
    rooms = RoomStore(redis, settings)
    room = rooms.get(record.room_id)
    questions = []
    for q in record.questions:
        state = clip_state(settings, redis, q)
        questions.append(QuestionOut(index=q.index, text=q.text, status=state.status, progress=state.progress,
                                     error=state.error, speech=_refs("tts", q.name, "wav", q.tts_job_id),
                                     clip=_refs("lipsync", q.name, "mp4", q.lipsync_job_id)))
    statuses = {q.status for q in questions}
    status = (ClipStatus.FAILED if statuses & {ClipStatus.FAILED, ClipStatus.MISSING} else
              ClipStatus.READY if statuses == {ClipStatus.READY} else ClipStatus.RENDERING)
    return InterviewOut(id=record.id, zbjname=record.zbjname, room_id=record.room_id, username=record.username,
                        job=record.job, language=record.language, count=record.count, avatar_id=record.avatar_id,
                        generator=record.generator, created_at=record.created_at,
                        room_open=room is not None and rooms.is_open(room.id),
                        urls=room.urls(settings) if room is not None else {}, status=status,
                        progress=round(sum(q.progress for q in questions) / max(1, len(questions)), 3),
                        questions=questions)


def find_interview(settings, redis, ref: str, caller: Caller) -> Interview:
    """An interview by its id, or by its room (id, zbjname or stream key); another key's reads as unknown."""
    store = InterviewStore(redis, settings)
    record = store.get(ref)
    if record is None:
        room = RoomStore(redis, settings).resolve(ref)
        record = store.for_room(room.id) if room is not None else None
    if record is None or not caller.may_use(record.owner):
        raise NotFound("unknown_interview", f"no interview {ref!r}")
    return record


def stock_clips(settings, redis, caller: Caller) -> list[StockClipOut]:
    """Stock clips rendered or rendering, but those of another key's avatar."""
    out = []
    for entry in InterviewStore(redis, settings).stock_entries():
        if not caller.may_use(entry.owner):
            continue
        state = clip_state(settings, redis, entry)
        out.append(StockClipOut(key=entry.key, name=entry.name, text=entry.text, status=state.status,
                                renders=entry.renders, lipsync_job_id=entry.lipsync_job_id,
                                clip_url=f"/v1/files/lipsync/{entry.name}.mp4"))
    return out


# ---- clips ----

def parse_clip_index(value: str | None) -> int:
    text = (value or "").strip()
    if not text:
        raise Missing("empty_parameter", "音频不可为空")
    try:
        return int(text)
    except ValueError:
        raise Invalid("bad_index", f"audioUrl must be a question index (0 to {MAX_QUESTIONS - 1}) or a stock "
                      f"clip id ({STOCK_IDS[0]} to {STOCK_IDS[-1]}), not {text!r}") from None


def _avatar_version(settings, redis, avatar_id: str) -> str:
    manifest = read_avatar(settings, redis, avatar_id).manifest or {}
    blob = json.dumps([manifest.get("source_sha256"), manifest.get("created_at"), manifest.get("enrollment")],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def clip_entry(settings, redis, room: Room, index: int) -> tuple[Clip, str, int]:
    """(clip with name and job ids, source, index) for a question index or a stock id."""
    store = InterviewStore(redis, settings)
    interview = store.for_room(room.id)
    if index in STOCK_IDS:
        language = interview.language if interview else settings.interview_default_language
        version = _avatar_version(settings, redis, room.avatar_id)
        try:
            owner = avatar_owner(redis, room.avatar_id)
            return store.ensure_stock(room.avatar_id, version, language, index, owner), "stock", index
        except LookupError as exc:
            raise Invalid("no_stock_text", str(exc)) from exc
    if interview is None:
        raise NotFound("no_interview", f"room {room.zbjname!r} has no interview questions; create the room "
                       "with /create/zbjv2 (stock clips 96 to 99 play in any room)")
    if not 0 <= index < len(interview.questions):
        raise Invalid("bad_index", f"room {room.zbjname!r} has questions 0 to {len(interview.questions) - 1} "
                      f"and stock clips {STOCK_IDS[0]} to {STOCK_IDS[-1]}; {index} is neither")
    return interview.questions[index], "question", index


async def _quick_status(settings, aredis, clip: Clip) -> ClipStatus:
    """The clip's state from two status fields (no job parsing): this runs every poll."""
    if clip_paths(settings, clip.name)[1].is_file():
        return ClipStatus.READY
    statuses = [await job_status_async(aredis, job_id) if job_id else None
                for job_id in (clip.tts_job_id, clip.lipsync_job_id)]
    if any(s in GAVE_UP for s in statuses):
        return ClipStatus.FAILED
    lost = statuses[1] is None and time.time() - clip.claimed_at > CLAIM_GRACE_S
    if statuses[1] == JobStatus.FINISHED or lost:
        return ClipStatus.MISSING
    return ClipStatus.RENDERING


async def wait_for_clip(settings, aredis, clip: Clip, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while await _quick_status(settings, aredis, clip) == ClipStatus.RENDERING and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def clip_ref(settings, redis, clip: Clip, source: str, index: int, avatar_id: str) -> ClipRef:
    """The ready clip as played, or the domain error that says why it cannot be."""
    state = clip_state(settings, redis, clip)
    what = f"stock clip {index}" if source == "stock" else f"question {index}"
    if state.status == ClipStatus.FAILED:
        raise Failed("clip_failed", f"{what} could not be rendered: {state.error}", clip=clip.name)
    if state.status == ClipStatus.MISSING:
        raise NotFound("clip_missing", f"{what}: {state.error}", clip=clip.name)
    if state.status != ClipStatus.READY:
        raise NotReady("clip_not_ready", f"{what} is still rendering ({state.progress:.0%}) after "
                       f"{settings.interview_clip_wait_s:.0f} s; try again shortly", clip=clip.name,
                       progress=state.progress)
    try:
        duration = probe(clip_paths(settings, clip.name)[1]).duration_s
    except MediaError as exc:
        raise Failed("clip_failed", f"{what} is not a readable video", clip=clip.name) from exc
    job = fetch_job(redis, clip.lipsync_job_id) if clip.lipsync_job_id else None
    result = job.result if job is not None and isinstance(job.result, dict) else {}
    return ClipRef(name=clip.name, audio=clip.audio, video=clip.video, duration_s=duration, source=source,
                   index=index, avatar_id=avatar_id, cycle_start=result.get("cycle_start"),
                   cycle_end=result.get("cycle_end"))


async def play_in_room(settings, redis, aredis, room: Room, index: int) -> tuple[ClipRef, Utterance]:
    clip, source, index = await run_in_threadpool(clip_entry, settings, redis, room, index)
    await wait_for_clip(settings, aredis, clip, settings.interview_clip_wait_s)
    ref = await run_in_threadpool(clip_ref, settings, redis, clip, source, index, room.avatar_id)
    utterance = await run_in_threadpool(play_clip, RoomStore(redis, settings), room, ref)
    return ref, utterance
