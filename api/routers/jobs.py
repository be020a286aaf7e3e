from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import ARedisDep, CallerDep, RedisDep, require_api_key
from api.schemas.jobs import JobOut
from api.services.jobs import cancel, load_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])


@router.get("/{job_id}", response_model=JobOut, summary="Status, progress, result or error of a job")
async def get_job(job_id: str, redis: RedisDep, aredis: ARedisDep, caller: CallerDep) -> JobOut:
    view = await load_job(redis, job_id, aredis, caller=caller)
    return JobOut(**view.__dict__)


@router.delete("/{job_id}", response_model=JobOut, summary="Cancel a job that has not started yet")
async def delete_job(job_id: str, redis: RedisDep, caller: CallerDep) -> JobOut:
    return JobOut(**(await cancel(redis, job_id, caller=caller)).__dict__)
