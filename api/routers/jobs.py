from __future__ import annotations

import re

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, require_api_key
from api.errors import ApiError
from api.schemas.jobs import JobOut
from core.jobs import JobView, fetch_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def load_job(redis, job_id: str) -> JobView:
    if not JOB_ID.match(job_id):
        raise ApiError(404, "unknown_job", f"no job {job_id!r}")
    view = await run_in_threadpool(fetch_job, redis, job_id)
    if view is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r}")
    return view


@router.get("/{job_id}", response_model=JobOut, summary="Status, progress, result or error of a job")
async def get_job(job_id: str, redis: RedisDep) -> JobOut:
    view = await load_job(redis, job_id)
    return JobOut(**view.__dict__)
