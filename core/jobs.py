"""Queues, enqueueing by dotted path, and the job view the API shows.

The API imports only this module (never the worker code), so enqueueing stays cheap and
torch/TF never load in the web process. Arguments and results cross Redis as JSON.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from core import keys
from core.files import FileOwners
from core.limits import check_disk, check_queue
from core.credentials import redis_password
from core.settings import Settings


class Kind(str, enum.Enum):
    """One queue per worker kind; the value is the queue name."""

    tts = "tts"
    asr = "asr"
    avatar = "avatar"
    lipsync = "lipsync"
    feedback = "feedback"
    converse = "converse"


# Job statuses are RQ's own (rq.job.JobStatus, a str enum: the wire values are RQ's strings).
# Those a client sees: RQ's transitional ones (created, ready_to_enqueue, rate_limited) read as queued.
SHOWN_STATUSES = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.FINISHED, JobStatus.FAILED, JobStatus.DEFERRED,
                  JobStatus.SCHEDULED, JobStatus.CANCELED, JobStatus.STOPPED)
# A job in one of these has ended without a result, and never will have one.
GAVE_UP = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})
ENDED = GAVE_UP | {JobStatus.FINISHED}


# What each kind runs: the API names it by path, the worker imports it.
JOB_FUNCTIONS: dict[Kind, str] = {
    Kind.tts: "workers.tts.synthesize_speech",
    Kind.asr: "workers.asr.transcribe_audio",
    Kind.avatar: "workers.avatar.prepare_avatar",
    Kind.lipsync: "workers.lipsync.render_lipsync_video",
    Kind.feedback: "workers.feedback.analyse_answer",
    Kind.converse: "workers.converse.reply_to_message",
}


def redis_connection(settings: Settings, socket_timeout: float = 5.0) -> Redis:
    # Workers block in BLPOP for longer than redis-py's 5 s default read timeout: they pass more.
    kwargs: dict[str, Any] = {"health_check_interval": 30, "socket_timeout": socket_timeout,
                              "socket_connect_timeout": 5.0}
    password = redis_password(settings)  # the configured one, or the fleet's own (core/credentials.py)
    if password:
        kwargs["password"] = password
    return Redis.from_url(settings.redis_url, **kwargs)


def get_queue(kind: Kind, connection: Redis) -> Queue:
    return Queue(kind.value, connection=connection, serializer=JSONSerializer)


# Where each kind writes the files a client can fetch (named by the job's `output_name`).
OUTPUT_DIRS: dict[Kind, str] = {Kind.tts: "tts", Kind.asr: "asr", Kind.lipsync: "lipsync", Kind.feedback: "feedback"}


def alive_workers(connection: Redis, queue: Queue) -> list[str]:
    from rq import Worker

    names = [w.name for w in Worker.all(queue=queue)]
    if not names:
        return []
    flags = connection.mget([keys.worker_alive(n) for n in names])
    return [n for n, flag in zip(names, flags) if flag]


def listen_for_commands(worker, wake_s: float = 1.0):
    """RQ's command channel of `worker` (stop a job, shut down) and the thread listening on it, which
    wakes every `wake_s` instead of RQ's 60 s. A stopping worker unsubscribes, then joins the thread; when
    the thread reads the unsubscribe reply first, redis-py waits out its whole timeout for a subscription
    that never comes, so a stop (SIGTERM, the end of a burst) took 60 s and supervisord killed the worker
    at its stop timeout instead. Returns (pubsub, thread), RQ's Worker.pubsub and .pubsub_thread."""
    pubsub = worker.connection.pubsub()
    pubsub.subscribe(**{worker.pubsub_channel_name: worker.handle_payload})
    return pubsub, pubsub.run_in_thread(sleep_time=wake_s, daemon=True,
                                        exception_handler=worker._pubsub_exception_handler)


def new_job_id() -> str:
    return uuid.uuid4().hex


def enqueue(
    settings: Settings,
    connection: Redis,
    kind: Kind,
    kwargs: dict[str, Any],
    job_id: str | None = None,
    depends_on: list[str] | Dependency | None = None,
    admit: bool = True,
    at_front: bool = False,
    owner: str | None = None,
) -> str:
    """Enqueue one job. With `admit` (new work from a client) it is first refused (core.limits.Refused)
    while the data disk is nearly full or the queue holds its cap; parts of work already admitted
    (the second job of a chain) pass admit=False. `at_front`: ahead of the queue's waiting jobs (a
    live reply's sentence goes before batch work). `owner`: the hash of the key the work is for
(api/access.py), kept in the job's meta and recorded as the owner of the files it writes."""
    if admit:
        check_disk(settings)
        check_queue(settings, connection, kind.value)
    job_id = job_id or new_job_id()
    if owner and kind in OUTPUT_DIRS and kwargs.get("output_name"):
        FileOwners(connection).claim(f"{OUTPUT_DIRS[kind]}/{kwargs['output_name']}", owner)
    queue = get_queue(kind, connection)
    queue.enqueue_call(
        func=JOB_FUNCTIONS[kind],
        kwargs=kwargs,
        job_id=job_id,
        timeout=settings.job_timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        ttl=settings.result_ttl_s,
        depends_on=depends_on,
        meta={"kind": kind.value, "progress": 0.0, **({"owner": owner} if owner else {})},
        at_front=at_front,
    )
    return job_id


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    status: JobStatus
    progress: float
    result: Any
    error: dict[str, Any] | None
    created_at: datetime | None
    ended_at: datetime | None
    started_at: datetime | None = None
    subject: dict[str, str] | None = None  # the room and/or avatar the job works for, when it names them
    owner: str | None = None  # hash of the key that made it; None: shared (not shown to clients)


SUBJECT_KEYS = ("room_id", "avatar_id")


def _subject(job: Job) -> dict[str, str] | None:
    try:
        kwargs = job.kwargs or {}
    except Exception:  # an undecodable payload must not hide the job's status
        return None
    found = {k: str(kwargs[k]) for k in SUBJECT_KEYS if kwargs.get(k)}
    return found or None


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def job_status(job: Job) -> JobStatus:
    """RQ's status as a client sees it: transitional states (e.g. ready_to_enqueue, between a
    finished dependency and the queue) read as queued."""
    raw = job.get_status(refresh=False)
    try:
        status = JobStatus(getattr(raw, "value", raw))
    except ValueError:
        return JobStatus.QUEUED
    return status if status in SHOWN_STATUSES else JobStatus.QUEUED


def _view(job: Job, result: Result | None) -> JobView:
    """The client-facing view of a job and its latest result (no I/O)."""
    status = job_status(job)
    meta = job.meta or {}
    error = meta.get("error")
    value = result.return_value if (result is not None and status == JobStatus.FINISHED) else None
    if status == JobStatus.FAILED and not error:
        text = (result.exc_string if result is not None else None) or job.exc_info or "job failed"
        error = {"type": "JobFailed", "message": text.strip().splitlines()[-1]}
    return JobView(
        id=job.id,
        kind=str(meta.get("kind") or (job.origin or "")),
        status=status,
        progress=1.0 if status == JobStatus.FINISHED else float(meta.get("progress") or 0.0),
        result=value,
        error=error,
        created_at=_aware(job.created_at),
        ended_at=_aware(job.ended_at),
        started_at=_aware(job.started_at),
        subject=_subject(job),
        owner=meta.get("owner"),
    )


def _with_dependencies(connection: Redis, job: Job, view: JobView) -> JobView:
    """A job waiting on a dependency that failed will never run: say so instead of "deferred"."""
    for dep_id in job.dependency_ids or []:
        dep = fetch_job(connection, dep_id.decode() if isinstance(dep_id, bytes) else dep_id)
        if dep is not None and dep.status in GAVE_UP:
            reason = (dep.error or {}).get("message", dep.status.value)
            return replace(view, status=JobStatus.FAILED, error={
                "type": "DependencyFailed", "message": f"{dep.kind} job {dep.id} failed: {reason}"})
    return view


def fetch_job(connection: Redis, job_id: str) -> JobView | None:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    view = _view(job, Result.fetch_latest(job, serializer=JSONSerializer))
    return _with_dependencies(connection, job, view) if view.status == JobStatus.DEFERRED else view


async def job_status_async(aredis, job_id: str) -> str | None:
    """RQ's status field of a job alone (one HGET on the hash RQ's Job.key_for names): the cheap read
    of a poll loop. None: no such job."""
    raw = await aredis.hget(Job.key_for(job_id), "status")
    return raw.decode() if raw else None


async def fetch_job_async(aredis, connection: Redis, job_id: str) -> JobView | None:
    """As fetch_job, with the reads on the event loop (one HGETALL, one XREVRANGE when ended):
    status polling is the API's hottest path. Parsing stays RQ's own (Job.restore, Result.restore)."""
    raw = await aredis.hgetall(Job.key_for(job_id))
    if not raw:
        return None
    job = Job(job_id, connection=connection, serializer=JSONSerializer)
    job.restore(raw)
    result = None
    if job.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED):
        entries = await aredis.xrevrange(Result.get_key(job_id), count=1)
        if entries:
            result_id, payload = entries[0]
            result = Result.restore(job_id, result_id.decode(), payload, connection=connection,
                                    serializer=JSONSerializer)
    return _view(job, result)


def set_progress(job: Job | None, progress: float, **extra: Any) -> None:
    """Record progress in job meta (visible to every API process); no-op outside a worker."""
    if job is None:
        return
    job.meta["progress"] = round(max(0.0, min(1.0, progress)), 3)
    job.meta.update(extra)
    job.save_meta()


def cancel_job(connection: Redis, job_id: str) -> JobStatus | None:
    """Cancel a job that has not started; returns its status afterwards (None: unknown job)."""
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    status = job_status(job)
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        job.cancel()
        return JobStatus.CANCELED
    return status
