"""Reading a job's state for a client."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from rq.job import JobStatus

from core.errors import NotFound
from core.jobs import JobView, fetch_job, fetch_job_async

if TYPE_CHECKING:
    from api.access import Caller

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def load_job(redis, job_id: str, aredis=None, *, caller: Caller | None) -> JobView:
    """The job, if this caller may see it: another key's job reads as unknown."""
    if not JOB_ID.match(job_id):
        raise NotFound("unknown_job", f"no job {job_id!r}")
    view = await fetch_job_async(aredis, redis, job_id) if aredis is not None else None
    if view is None or view.status == JobStatus.DEFERRED:
        view = await run_in_threadpool(fetch_job, redis, job_id)
    if view is None or (caller is not None and not caller.may_use(view.owner)):
        raise NotFound("unknown_job", f"no job {job_id!r}")
    return view
