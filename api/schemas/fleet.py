from __future__ import annotations

from pydantic import BaseModel

from api.schemas.jobs import JobOut


class QueueOut(BaseModel):
    queued: int
    started: int
    failed: int
    workers: int  # live workers of the kind


class FleetOut(BaseModel):
    queues: dict[str, QueueOut]
    stream_workers: dict[str, int]  # live stream worker -> rooms it publishes
    rooms_open: int
    recent_jobs: list[JobOut]  # newest first
