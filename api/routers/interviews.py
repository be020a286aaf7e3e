"""Interviews: legacy ``/create/zbjv2`` and ``/humanv2``, and ``/v1/interviews``. The routes hold
no logic of their own: api/services/interviews.py creates, reads and plays interviews."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from api.deps import ARedisDep, CallerDep, LegacyCallerDep, RedisDep, SettingsDep, require_api_key, require_legacy_access
from api.schemas.interviews import InterviewCreate, InterviewOut, PlayAccepted, PlayRequest, StockClipOut
from api.services.interviews import (create_interview, find_interview, interview_out, legacy_count,
                                     parse_clip_index, play_in_room, stock_clips as list_stock_clips)
from api.services.rooms import get_room, legacy_room
from core.rooms import RoomStore

legacy_router = APIRouter(tags=["legacy"], dependencies=[Depends(require_legacy_access)])
router = APIRouter(prefix="/v1", tags=["interviews"], dependencies=[Depends(require_api_key)])


# ---- legacy ----

@legacy_router.get("/create/zbjv2", summary="Legacy: open an interview room; questions are generated and rendered")
async def legacy_create_interview(settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep,
                                  username: str | None = Query(None, description="default hnkjxy"),
                                  job: str | None = Query(None, description="job title"),
                                  count: str | None = Query(None, description="number of questions, 1 to 20")) -> dict:
    record = await create_interview(settings, redis, job, legacy_count(count, settings.interview_default_count),
                                    username=(username or "").strip() or None, caller=caller)
    return {"zbjname": record.zbjname, "question": [q.text for q in record.questions]}


@legacy_router.get("/humanv2", summary="Legacy: play question i (or stock clip 96..99) in the room's live stream")
async def legacy_humanv2(settings: SettingsDep, redis: RedisDep, aredis: ARedisDep, caller: LegacyCallerDep,
                         zbjname: str | None = Query(None, description="default room hnkjxyms"),
                         audioUrl: str | None = Query(None, description="question index or 96..99")) -> dict:  # noqa: N803
    index = parse_clip_index(audioUrl)
    room = await run_in_threadpool(legacy_room, RoomStore(redis, settings), zbjname, caller)
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
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), record.room_id, caller)
    clip, utterance = await play_in_room(settings, redis, aredis, room, body.clip)
    return PlayAccepted(utterance_id=utterance.id, room_id=room.id, clip=clip.video,
                        duration_s=round(clip.duration_s, 3))


@router.get("/stock-clips", response_model=list[StockClipOut], summary="Stock clips rendered or rendering, per avatar")
async def stock_clips(settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[StockClipOut]:
    return await run_in_threadpool(list_stock_clips, settings, redis, caller)
