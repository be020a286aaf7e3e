from __future__ import annotations

import re

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import ARedisDep, RedisDep, require_api_key
from api.errors import ApiError
from api.schemas.jobs import JobOut
from core.jobs import JobView, Status, cancel_job, fetch_job, fetch_job_async

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def load_job(redis, job_id: str, aredis=None) -> JobView:
    if not JOB_ID.match(job_id):
        raise ApiError(404, "unknown_job", f"no job {job_id!r}")
    view = await fetch_job_async(aredis, redis, job_id) if aredis is not None else None
    if view is None or view.status == Status.deferred:
        view = await run_in_threadpool(fetch_job, redis, job_id)
    if view is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r}")
    return view


@router.get("/{job_id}", response_model=JobOut, summary="Status, progress, result or error of a job")
async def get_job(job_id: str, redis: RedisDep, aredis: ARedisDep) -> JobOut:
    view = await load_job(redis, job_id, aredis)
    return JobOut(**view.__dict__)


@router.delete("/{job_id}", response_model=JobOut, summary="Cancel a job that has not started yet")
async def delete_job(job_id: str, redis: RedisDep) -> JobOut:
    await load_job(redis, job_id)
    status = await run_in_threadpool(cancel_job, redis, job_id)
    if status != Status.canceled:
        raise ApiError(409, "job_not_cancellable", f"job {job_id} is {status.value if status else 'gone'}")
    return JobOut(**(await load_job(redis, job_id)).__dict__)
