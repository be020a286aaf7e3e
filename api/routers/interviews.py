"""Interviews: legacy ``/create/zbjv2`` and ``/humanv2``, and ``/v1/interviews``.

Creating an interview generates the questions (bank or LLM), opens the room at once (it publishes
its idle loop) and enqueues each question's render chain. Playing a clip resolves it (a question
index or a stock id 96..99), waits a bounded time for a clip still rendering, polling Redis
asynchronously, then hands it to :func:`core.interviews.playback.play_clip`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool
from rq.job import JobStatus

from api.deps import ARedisDep, CallerDep, LegacyCallerDep, RedisDep, SettingsDep, require_api_key, require_legacy_access
from api.errors import ApiError
from api.schemas.interviews import (FileRefs, InterviewCreate, InterviewOut, PlayAccepted, PlayRequest,
                                    QuestionOut, StockClipOut)
from api.services.avatars import avatar_owner, check_avatar_access, read_avatar, ready_avatar
from api.services.rooms import create_room, get_room
from core.interviews import MAX_QUESTIONS, STOCK_IDS
from core.interviews.generators import GeneratorError, check_request, load_generator
from core.interviews.playback import ClipRef, play_clip
from core.interviews.store import CLAIM_GRACE_S, ClipStatus, InterviewStore, admit_chains, clip_paths, clip_state
from core.jobs import GAVE_UP, fetch_job, job_status_async
from core.media import MediaError, probe
from core.rooms import Room, RoomStore, Utterance

legacy_router = APIRouter(tags=["legacy"], dependencies=[Depends(require_legacy_access)])
router = APIRouter(prefix="/v1", tags=["interviews"], dependencies=[Depends(require_api_key)])

_GENERATOR_STATUS = {"empty_parameter": 400, "invalid_input": 422, "invalid_count": 422, "bank_error": 422,
                     "llm_not_configured": 503, "llm_unavailable": 502}


def job_language(job: str, default: str) -> str:
    if any("\u3400" <= ch <= "\u9fff" for ch in job):
        return "zh"
    return "en" if any(ch.isascii() and ch.isalpha() for ch in job) else default


async def create_interview(settings, redis, job: str | None, count: int, username: str | None = None,
                           language: str | None = None, avatar_id: str | None = None,
                           ttl_s: int | None = None, caller=None) -> dict:
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
        raise ApiError(_GENERATOR_STATUS.get(exc.code, 422), exc.code, str(exc)) from exc
    await run_in_threadpool(admit_chains, settings, redis)
    # The room speaks and hears the interview's language, and its script asks about the job.
    room = await run_in_threadpool(lambda: create_room(settings, redis, username, avatar_id, ttl_s, caller,
                                                       language=language, job=job))
    store = InterviewStore(redis, settings)
    owner = caller.owner if caller is not None else None
    return await run_in_threadpool(store.create, room, job, language, count, questions, avatar_id, owner)


def _refs(kind: str, name: str, ext: str, job_id: str | None) -> FileRefs:
    return FileRefs(file=f"{kind}/{name}.{ext}", legacy_path=f"tests/{name}.{ext}",
                    url=f"/v1/files/{kind}/{name}.{ext}", job_id=job_id)


def interview_out(settings, redis, record: dict) -> InterviewOut:
    rooms = RoomStore(redis, settings)
    room = rooms.get(record["room_id"])
    questions = []
    for q in record["questions"]:
        state = clip_state(settings, redis, q)
        questions.append(QuestionOut(index=q["index"], text=q["text"], status=state.status, progress=state.progress,
                                     error=state.error, speech=_refs("tts", q["name"], "wav", q["tts_job_id"]),
                                     clip=_refs("lipsync", q["name"], "mp4", q["lipsync_job_id"])))
    statuses = {q.status for q in questions}
    status = (ClipStatus.FAILED if statuses & {ClipStatus.FAILED, ClipStatus.MISSING} else
              ClipStatus.READY if statuses == {ClipStatus.READY} else ClipStatus.RENDERING)
    return InterviewOut(**{k: record[k] for k in ("id", "zbjname", "room_id", "username", "job", "language", "count",
                                                  "avatar_id", "generator", "created_at")},
                        room_open=room is not None and rooms.is_open(room.id),
                        urls=room.urls(settings) if room is not None else {}, status=status,
                        progress=round(sum(q.progress for q in questions) / max(1, len(questions)), 3),
                        questions=questions)


def find_interview(settings, redis, ref: str, caller) -> dict:
    """An interview by its id, or by its room (id, zbjname or stream key); another key's reads as unknown."""
    store = InterviewStore(redis, settings)
    record = store.get(ref)
    if record is None:
        room = RoomStore(redis, settings).resolve(ref)
        record = store.for_room(room.id) if room is not None else None
    if record is None or not caller.may_use(record.get("owner")):
        raise ApiError(404, "unknown_interview", f"no interview {ref!r}")
    return record


# ---- clips ----

def parse_clip_index(value: str | None) -> int:
    text = (value or "").strip()
    if not text:
        raise ApiError(400, "empty_parameter", "音频不可为空")
    try:
        return int(text)
    except ValueError:
        raise ApiError(422, "bad_index", f"audioUrl must be a question index (0 to {MAX_QUESTIONS - 1}) or a stock "
                       f"clip id ({STOCK_IDS[0]} to {STOCK_IDS[-1]}), not {text!r}") from None


def _avatar_version(settings, redis, avatar_id: str) -> str:
    manifest = read_avatar(settings, redis, avatar_id).manifest or {}
    blob = json.dumps([manifest.get("source_sha256"), manifest.get("created_at"), manifest.get("enrollment")],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def clip_entry(settings, redis, room: Room, index: int) -> tuple[dict, str, int]:
    """(clip entry with name and job ids, source, index) for a question index or a stock id."""
    store = InterviewStore(redis, settings)
    interview = store.for_room(room.id)
    if index in STOCK_IDS:
        language = interview["language"] if interview else settings.interview_default_language
        version = _avatar_version(settings, redis, room.avatar_id)
        try:
            owner = avatar_owner(redis, room.avatar_id)
            return store.ensure_stock(room.avatar_id, version, language, index, owner), "stock", index
        except LookupError as exc:
            raise ApiError(422, "no_stock_text", str(exc)) from exc
    if interview is None:
        raise ApiError(404, "no_interview", f"room {room.zbjname!r} has no interview questions; create the room "
                       "with /create/zbjv2 (stock clips 96 to 99 play in any room)")
    if not 0 <= index < len(interview["questions"]):
        raise ApiError(422, "bad_index", f"room {room.zbjname!r} has questions 0 to {len(interview['questions']) - 1} "
                       f"and stock clips {STOCK_IDS[0]} to {STOCK_IDS[-1]}; {index} is neither")
    return interview["questions"][index], "question", index


async def _quick_status(settings, aredis, clip: dict) -> ClipStatus:
    """The clip's state from two status fields (no job parsing): this runs every poll."""
    if clip_paths(settings, clip["name"])[1].is_file():
        return ClipStatus.READY
    statuses = [await job_status_async(aredis, job_id) if job_id else None
                for job_id in (clip.get("tts_job_id"), clip.get("lipsync_job_id"))]
    if any(s in GAVE_UP for s in statuses):
        return ClipStatus.FAILED
    lost = statuses[1] is None and time.time() - clip.get("claimed_at", 0) > CLAIM_GRACE_S
    if statuses[1] == JobStatus.FINISHED or lost:
        return ClipStatus.MISSING
    return ClipStatus.RENDERING


async def wait_for_clip(settings, aredis, clip: dict, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while await _quick_status(settings, aredis, clip) == ClipStatus.RENDERING and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def clip_ref(settings, redis, clip: dict, source: str, index: int, avatar_id: str) -> ClipRef:
    """The ready clip as played, or the JSON error that says why it cannot be."""
    state = clip_state(settings, redis, clip)
    what = f"stock clip {index}" if source == "stock" else f"question {index}"
    if state.status == ClipStatus.FAILED:
        raise ApiError(500, "clip_failed", f"{what} could not be rendered: {state.error}", clip=clip["name"])
    if state.status == ClipStatus.MISSING:
        raise ApiError(404, "clip_missing", f"{what}: {state.error}", clip=clip["name"])
    if state.status != ClipStatus.READY:
        raise ApiError(504, "clip_not_ready", f"{what} is still rendering ({state.progress:.0%}) after "
                       f"{settings.interview_clip_wait_s:.0f} s; try again shortly", clip=clip["name"],
                       progress=state.progress)
    try:
        duration = probe(clip_paths(settings, clip["name"])[1]).duration_s
    except MediaError as exc:
        raise ApiError(500, "clip_failed", f"{what} is not a readable video", clip=clip["name"]) from exc
    job = fetch_job(redis, clip["lipsync_job_id"]) if clip.get("lipsync_job_id") else None
    result = job.result if job is not None and isinstance(job.result, dict) else {}
    return ClipRef(name=clip["name"], audio=clip["audio"], video=clip["video"], duration_s=duration, source=source,
                   index=index, avatar_id=avatar_id, cycle_start=result.get("cycle_start"),
                   cycle_end=result.get("cycle_end"))


async def play_in_room(settings, redis, aredis, room: Room, index: int) -> tuple[ClipRef, Utterance]:
    clip, source, index = await run_in_threadpool(clip_entry, settings, redis, room, index)
    await wait_for_clip(settings, aredis, clip, settings.interview_clip_wait_s)
    ref = await run_in_threadpool(clip_ref, settings, redis, clip, source, index, room.avatar_id)
    utterance = await run_in_threadpool(play_clip, RoomStore(redis, settings), room, ref)
    return ref, utterance


# ---- legacy ----

def _legacy_count(value: str | None, default: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise ApiError(422, "invalid_count", f"`count` must be a whole number from 1 to {MAX_QUESTIONS}") from None


@legacy_router.get("/create/zbjv2", summary="Legacy: open an interview room; questions are generated and rendered")
async def legacy_create_interview(settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep,
                                  username: str | None = Query(None, description="default hnkjxy"),
                                  job: str | None = Query(None, description="job title"),
                                  count: str | None = Query(None, description="number of questions, 1 to 20")) -> dict:
    record = await create_interview(settings, redis, job, _legacy_count(count, settings.interview_default_count),
                                    username=(username or "").strip() or None, caller=caller)
    return {"zbjname": record["zbjname"], "question": [q["text"] for q in record["questions"]]}


@legacy_router.get("/humanv2", summary="Legacy: play question i (or stock clip 96..99) in the room's live stream")
async def legacy_humanv2(settings: SettingsDep, redis: RedisDep, aredis: ARedisDep, caller: LegacyCallerDep,
                         zbjname: str | None = Query(None, description="default room hnkjxyms"),
                         audioUrl: str | None = Query(None, description="question index or 96..99")) -> dict:  # noqa: N803
    index = parse_clip_index(audioUrl)
    rooms = RoomStore(redis, settings)
    if zbjname and zbjname.strip():
        room = await run_in_threadpool(get_room, rooms, zbjname.strip(), caller)
    else:
        room = await run_in_threadpool(rooms.ensure_default)
    ref, _utterance = await play_in_room(settings, redis, aredis, room, index)
    return {"message": round(ref.duration_s + 1.5, 3)}


# ---- v1 ----

@router.post("/interviews", status_code=201, response_model=InterviewOut,
             summary="Open an interview room: questions for the job, each rendered as a lip-synced clip")
async def create(body: InterviewCreate, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> InterviewOut:
    record = await create_interview(settings, redis, body.job, body.count, body.username, body.language,
                                    body.avatar_id, body.ttl_s, caller)
    return await run_in_threadpool(interview_out, settings, redis, record)


@router.get("/interviews/{ref}", response_model=InterviewOut,
            summary="An interview (by id, or its room's id, zbjname or stream key): questions, speech, clips, progress")
async def get(ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> InterviewOut:
    return await run_in_threadpool(lambda: interview_out(settings, redis, find_interview(settings, redis, ref, caller)))


@router.post("/interviews/{ref}/play", status_code=202, response_model=PlayAccepted,
             summary="Play question i (or stock clip 96..99) in the interview's room")
async def play(ref: str, body: PlayRequest, settings: SettingsDep, redis: RedisDep, aredis: ARedisDep,
               caller: CallerDep) -> PlayAccepted:
    record = await run_in_threadpool(find_interview, settings, redis, ref, caller)
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), record["room_id"], caller)
    clip, utterance = await play_in_room(settings, redis, aredis, room, body.clip)
    return PlayAccepted(utterance_id=utterance.id, room_id=room.id, clip=clip.video,
                        duration_s=round(clip.duration_s, 3))


@router.get("/stock-clips", response_model=list[StockClipOut], summary="Stock clips rendered or rendering, per avatar")
async def stock_clips(settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[StockClipOut]:
    def _all():
        out = []
        for entry in InterviewStore(redis, settings).stock_entries():
            if not caller.may_use(entry.get("owner")):  # a clip of another key's avatar
                continue
            state = clip_state(settings, redis, entry)
            out.append(StockClipOut(key=entry["key"], name=entry["name"], text=entry["text"], status=state.status,
                                    renders=entry.get("renders", 0), lipsync_job_id=entry.get("lipsync_job_id"),
                                    clip_url=f"/v1/files/lipsync/{entry['name']}.mp4"))
        return out

    return await run_in_threadpool(_all)
