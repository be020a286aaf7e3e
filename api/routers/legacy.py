"""The old service's GET contracts, kept byte-for-byte in shape (see shared legacy-api.md). The
routes hold no logic of their own: api/services/legacy.py does the work, without blocking the event
loop (it enqueues, then polls the job's status in Redis asynchronously for a bounded time).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ARedisDep, LegacyCallerDep, RedisDep, SettingsDep, require_legacy_access
from api.services.files import owned_path
from api.services.legacy import speak_audio, speech_file, transcript
from api.services.rooms import create_room

# Old clients send no headers: with keys configured they pass ?key= or call from an allowed address.
router = APIRouter(tags=["legacy"], dependencies=[Depends(require_legacy_access)])


@router.get("/tts", summary="Legacy: text to speech; returns tests/<id>.wav")
async def legacy_tts(settings: SettingsDep, redis: RedisDep, aredis: ARedisDep, caller: LegacyCallerDep,
                     msg: str | None = Query(None, description="text to speak")) -> dict:
    return {"message": await speech_file(settings, redis, aredis, msg, caller)}


@router.get("/asr", summary="Legacy: speech to text of a file this service owns")
async def legacy_asr(settings: SettingsDep, redis: RedisDep, aredis: ARedisDep, caller: LegacyCallerDep,
                     url: str | None = Query(None, description="e.g. tests/<id>.wav")) -> dict:
    return {"message": await transcript(settings, redis, aredis, url, caller)}


@router.get("/tests/{name}", summary="Legacy: download a generated or uploaded file")
async def legacy_download(name: str, settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep):
    path = await run_in_threadpool(lambda: owned_path(settings, f"tests/{name}", redis=redis, caller=caller))
    return FileResponse(path, filename=path.name)


@router.get("/create/zbj", summary="Legacy: open a live room; returns its zbjname")
async def legacy_create_room(settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep,
                             username: str | None = Query(None, description="default hnkjxy")) -> dict:
    room = await run_in_threadpool(create_room, settings, redis, (username or "").strip() or None, None, None, caller)
    return {"message": room.zbjname}


@router.get("/human", summary="Legacy: make the room's avatar speak an audio file in its live stream")
async def legacy_human(settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep,
                       zbjname: str | None = Query(None, description="default room hnkjxyms"),
                       audioUrl: str | None = Query(None, description="e.g. tests/<id>.wav")) -> dict:  # noqa: N803
    duration = await run_in_threadpool(speak_audio, settings, redis, zbjname, audioUrl, caller)
    return {"message": round(duration + 1.5, 3)}
