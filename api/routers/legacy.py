"""The old service's GET contracts, kept byte-for-byte in shape (see shared legacy-api.md).

Handlers never block the event loop: they enqueue, then poll the job's status in Redis
asynchronously for a bounded time.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from rq.job import JobStatus

from api.deps import ARedisDep, LegacyCallerDep, RedisDep, SettingsDep, require_legacy_access
from api.errors import ApiError
from api.services.files import owned_audio, owned_path
from api.services.rooms import create_room, get_room
from api.services.speech import enqueue_asr, enqueue_tts
from core.jobs import ENDED, fetch_job, job_status_async
from core.rooms import RoomStore

# Old clients send no headers: with keys configured they pass ?key= or call from an allowed address.
router = APIRouter(tags=["legacy"], dependencies=[Depends(require_legacy_access)])



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


def _required(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise ApiError(400, "empty_parameter", f"parameter `{name}` must not be empty")
    return value.strip()


@router.get("/tts", summary="Legacy: text to speech; returns tests/<id>.wav")
async def legacy_tts(settings: SettingsDep, redis: RedisDep, aredis: ARedisDep, caller: LegacyCallerDep,
                     msg: str | None = Query(None, description="text to speak")) -> dict:
    job_id = await enqueue_tts(settings, redis, _required(msg, "msg"), owner=caller.owner)
    status = await wait_for_job(aredis, job_id, settings.legacy_wait_s)
    if status == JobStatus.FAILED:
        view = await run_in_threadpool(fetch_job, redis, job_id)
        reason = (view.error or {}).get("message", "speech synthesis failed") if view else "speech synthesis failed"
        raise ApiError(500, "tts_failed", reason, job_id=job_id)
    # As the old service did: the path is returned even if the file is not ready yet; the
    # client polls GET /tests/<id>.wav (404 until it exists).
    return {"message": f"tests/{job_id}.wav"}


@router.get("/asr", summary="Legacy: speech to text of a file this service owns")
async def legacy_asr(settings: SettingsDep, redis: RedisDep, aredis: ARedisDep, caller: LegacyCallerDep,
                     url: str | None = Query(None, description="e.g. tests/<id>.wav")) -> dict:
    job_id = await enqueue_asr(settings, redis, _required(url, "url"), language="zh", caller=caller)
    status = await wait_for_job(aredis, job_id, settings.legacy_asr_wait_s)
    view = await run_in_threadpool(fetch_job, redis, job_id)
    if status == JobStatus.FINISHED and view is not None:
        return {"message": view.result["text"]}
    if status == JobStatus.FAILED:
        reason = (view.error or {}).get("message", "recognition failed") if view else "recognition failed"
        raise ApiError(422, "asr_failed", reason, job_id=job_id)
    raise ApiError(504, "timeout", "recognition still running; poll /v1/jobs/" + job_id, job_id=job_id)


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
    if audioUrl is None or not audioUrl.strip():
        raise ApiError(400, "empty_parameter", "音频不可为空")
    store = RoomStore(redis, settings)
    # The audio first: a bad call must not open (or touch) a room.
    ref, duration = await run_in_threadpool(lambda: owned_audio(settings, audioUrl.strip(), settings.max_lipsync_audio_s,
                                                                redis=redis, caller=caller))
    if zbjname and zbjname.strip():
        room = await run_in_threadpool(get_room, store, zbjname.strip(), caller)
    else:
        room = await run_in_threadpool(store.ensure_default)
    await run_in_threadpool(lambda: store.say(room, audio=ref, duration_s=duration))
    return {"message": round(duration + 1.5, 3)}
