from __future__ import annotations

from pydantic import BaseModel

from api.schemas.jobs import JobOut


class QueueOut(BaseModel):
    queued: int
    started: int
    failed: int
    workers: int  # live workers of the kind
    waiting: int = 0  # queued + waiting on a dependency: what the queue cap counts
    limit: int | None = None  # MTL_<KIND>_MAX_QUEUED
    failed_window: int | None = None  # failed within the last window_s seconds
    finished_window: int | None = None  # finished within the last window_s seconds


class ProcessOut(BaseModel):
    name: str
    kind: str  # api, stream, or the queue(s) a worker serves
    pid: int | None = None
    host: str | None = None
    cpu_percent: float | None = None  # of one core, since the previous reading (None: another host)
    rss_mb: float | None = None  # resident memory


class FleetOut(BaseModel):
    queues: dict[str, QueueOut]
    stream_workers: dict[str, int]  # live stream worker -> rooms it publishes
    rooms_open: int
    rooms_limit: int | None = None  # MTL_MAX_OPEN_ROOMS (or what the stream workers can publish)
    stream_capacity: int | None = None  # rooms the live stream workers can publish together
    free_disk_mb: int | None = None  # under the data dir; new work is refused below min_free_disk_mb
    min_free_disk_mb: int | None = None
    recent_jobs: list[JobOut]  # newest first
    # Text limits the console counts against as the operator types: say (text_chars), a room
    # message (message_chars), a room's system prompt (system_prompt_chars).
    limits: dict[str, int] = {}
    window_s: int = 3600  # the window of failed_window / finished_window
    processes: list[ProcessOut] = []
