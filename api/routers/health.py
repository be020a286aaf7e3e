from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep
from api.services.fleet import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The API process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis reachable and at least one live worker per queue")
async def readyz(redis: RedisDep):
    ready, detail = await run_in_threadpool(readiness, redis)
    return JSONResponse({"status": "ready" if ready else "not_ready", **detail}, status_code=200 if ready else 503)
