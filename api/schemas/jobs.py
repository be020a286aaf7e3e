from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.jobs import Status


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    result_url: str | None = None


class JobError(BaseModel):
    type: str
    message: str
    code: str | None = None
    details: dict[str, Any] | None = None


class JobOut(BaseModel):
    id: str
    kind: str
    status: Status
    progress: float
    result: Any = None
    error: JobError | None = None
    created_at: datetime | None = None
    ended_at: datetime | None = None
    started_at: datetime | None = None  # ended_at - started_at: how long it ran
    subject: dict[str, str] | None = None  # room_id and/or avatar_id the job works for, when it names them
