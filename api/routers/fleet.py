"""`GET /v1/fleet`: what the fleet is doing, for operators (the console's Fleet page)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.fleet import FleetOut
from api.services.fleet import fleet_status

router = APIRouter(prefix="/v1/fleet", tags=["fleet"], dependencies=[Depends(require_api_key)])


@router.get("", response_model=FleetOut,
            summary="Queues, live workers per kind, stream workers, processes, the caller's recent jobs")
async def fleet(settings: SettingsDep, redis: RedisDep, caller: CallerDep,
                recent: int = Query(20, ge=1, le=100, description="how many recent jobs"),
                window_s: int = Query(3600, ge=60, le=7 * 86400,
                                      description="failed_window/finished_window count jobs ended this recently")
                ) -> FleetOut:
    return FleetOut(**await run_in_threadpool(fleet_status, redis, settings, recent, caller, window_s))
