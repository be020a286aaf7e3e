"""Admission control shared by the API and anything else that creates work: queue depth caps and
free disk space. Refusals are `Refused` errors that carry what ran out (a `Shortage`) and when to
retry; the API alone turns each shortage into an HTTP status (api/errors.py), so this module, and
every worker or script that admits work through it, stays free of web code.
"""

from __future__ import annotations

import os
from enum import Enum

from redis import Redis
from rq import Queue
from rq.registry import DeferredJobRegistry

from core.settings import Settings


class Shortage(str, Enum):
    """What ran out when new work is refused."""

    BUSY = "busy"  # a queue (of jobs, of a room's utterances) holds its cap: retry once some is done
    UNAVAILABLE = "unavailable"  # the fleet's capacity is in use (every room a stream worker can publish)
    STORAGE_FULL = "storage_full"  # too little free disk for new work's files


class Refused(Exception):
    """New work refused for a while: the service is full, not the request wrong."""

    def __init__(self, kind: Shortage, code: str, message: str, retry_after_s: int | None = None, **details) -> None:
        super().__init__(message)
        self.kind, self.code, self.message = Shortage(kind), code, message
        self.retry_after_s = retry_after_s
        self.details = details


def queue_cap(settings: Settings, kind: str) -> int:
    return int(getattr(settings, f"{kind}_max_queued", 100))


def queue_depth(connection: Redis, kind: str) -> int:
    """Jobs of a queue not started yet: queued, plus deferred ones waiting for a dependency."""
    with connection.pipeline(transaction=False) as p:
        p.llen(Queue(kind, connection=connection).key)  # RQ's own name for the queue's list
        p.zcard(DeferredJobRegistry(kind, connection=connection).key)
        queued, deferred = p.execute()
    return int(queued) + int(deferred)


def check_queue(settings: Settings, connection: Redis, kind: str) -> None:
    """queue_full (busy) once the queue holds its cap. A soft cap: requests admitted at the same
    moment may overshoot it by their number, never by more."""
    cap = queue_cap(settings, kind)
    depth = queue_depth(connection, kind)
    if depth >= cap:
        raise Refused(Shortage.BUSY, "queue_full", f"the {kind} queue holds {depth} jobs (limit {cap}); retry later",
                      retry_after_s=settings.busy_retry_after_s, queue=kind, queued=depth, limit=cap)


def free_disk_bytes(settings: Settings) -> int:
    path = settings.data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_disk(settings: Settings) -> None:
    """insufficient_storage (storage_full) while less than `min_free_disk_mb` is free under the data dir.
    Live rooms are not affected: publishing writes nothing there."""
    need = settings.min_free_disk_mb * 1024 * 1024
    if need <= 0:
        return
    free = free_disk_bytes(settings)
    if free < need:
        raise Refused(Shortage.STORAGE_FULL, "insufficient_storage",
                      f"only {free // (1024 * 1024)} MB free under the data directory "
                      f"(new work needs {settings.min_free_disk_mb} MB); retry later",
                      retry_after_s=60, free_mb=free // (1024 * 1024), required_mb=settings.min_free_disk_mb)


def open_rooms_cap(settings: Settings) -> int:
    return settings.max_open_rooms or settings.stream_workers * settings.stream_capacity
