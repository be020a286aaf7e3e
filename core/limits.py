"""Admission control shared by the API and anything else that creates work: queue depth caps and
free disk space. Refusals are `Refused` errors that carry their HTTP status and Retry-After; the
API turns them into JSON errors of the path's family (api/errors.py), so this module stays free
of web code.
"""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue
from rq.registry import DeferredJobRegistry

from core.settings import Settings


class Refused(Exception):
    """New work refused for a while: the service is full, not the request wrong."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None, **details) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
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
    """429 queue_full once the queue holds its cap. A soft cap: requests admitted at the same
    moment may overshoot it by their number, never by more."""
    cap = queue_cap(settings, kind)
    depth = queue_depth(connection, kind)
    if depth >= cap:
        raise Refused(429, "queue_full", f"the {kind} queue holds {depth} jobs (limit {cap}); retry later",
                      retry_after_s=settings.busy_retry_after_s, queue=kind, queued=depth, limit=cap)


def free_disk_bytes(settings: Settings) -> int:
    path = settings.data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_disk(settings: Settings) -> None:
    """507 insufficient_storage while less than `min_free_disk_mb` is free under the data dir.
    Live rooms are not affected: publishing writes nothing there."""
    need = settings.min_free_disk_mb * 1024 * 1024
    if need <= 0:
        return
    free = free_disk_bytes(settings)
    if free < need:
        raise Refused(507, "insufficient_storage",
                      f"only {free // (1024 * 1024)} MB free under the data directory "
                      f"(new work needs {settings.min_free_disk_mb} MB); retry later",
                      retry_after_s=60, free_mb=free // (1024 * 1024), required_mb=settings.min_free_disk_mb)


def open_rooms_cap(settings: Settings) -> int:
    return settings.max_open_rooms or settings.stream_workers * settings.stream_capacity
