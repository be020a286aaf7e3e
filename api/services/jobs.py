"""Reading a job's state for a client, and cancelling it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from rq.job import JobStatus

from core.errors import Conflict, NotFound
from core.jobs import JobView, cancel_job, fetch_job, fetch_job_async

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


async def cancel(redis, job_id: str, *, caller: Caller | None) -> JobView:
    """Cancels a job of this caller's that has not started yet; a started or ended one stays as it is."""
    await load_job(redis, job_id, caller=caller)
    status = await run_in_threadpool(cancel_job, redis, job_id)
    if status != JobStatus.CANCELED:
        raise Conflict("job_not_cancellable", f"job {job_id} is {status.value if status else 'gone'}")
    return await load_job(redis, job_id, caller=caller)
