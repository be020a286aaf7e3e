from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from core.jobs import SHOWN_STATUSES

# A job's status on the wire: RQ's own values (rq.job.JobStatus) as clients see them, under the name
# the API description has always given them.
Status = Enum("Status", {s.value: s.value for s in SHOWN_STATUSES}, type=str, module=__name__)


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
