from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep
from core.jobs import Kind, alive_workers, get_queue
from core.rooms import stream_worker_loads

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The API process is up")
async def healthz() -> dict:
    return {"status": "ok"}


def _readiness(redis) -> tuple[bool, dict]:
    try:
        redis.ping()
    except Exception as exc:
        return False, {"redis": f"unreachable: {exc}", "queues": {}}
    queues = {}
    for kind in Kind:
        queue = get_queue(kind, redis)
        queues[kind.value] = {"workers": len(alive_workers(redis, queue)), "queued": queue.count}
    streams = len(stream_worker_loads(redis))
    ready = all(q["workers"] > 0 for q in queues.values()) and streams > 0
    return ready, {"redis": "ok", "queues": queues, "stream_workers": streams}


@router.get("/readyz", summary="Redis reachable and at least one live worker per queue")
async def readyz(redis: RedisDep):
    ready, detail = await run_in_threadpool(_readiness, redis)
    return JSONResponse({"status": "ready" if ready else "not_ready", **detail}, status_code=200 if ready else 503)
