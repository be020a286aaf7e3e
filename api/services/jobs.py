"""Reading a job's state for a client."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool

from core.errors import NotFound
from core.jobs import JobView, Status, fetch_job, fetch_job_async

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def load_job(redis, job_id: str, aredis=None) -> JobView:
    if not JOB_ID.match(job_id):
        raise NotFound("unknown_job", f"no job {job_id!r}")
    view = await fetch_job_async(aredis, redis, job_id) if aredis is not None else None
    if view is None or view.status == Status.deferred:
        view = await run_in_threadpool(fetch_job, redis, job_id)
    if view is None:
        raise NotFound("unknown_job", f"no job {job_id!r}")
    return view
