from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.schemas.jobs import JobError


class AvatarAccepted(BaseModel):
    avatar_id: str
    job_id: str
    status_url: str
    avatar_url: str


class AvatarOut(BaseModel):
    id: str
    status: str  # queued | started | ready | failed
    job_id: str | None = None
    progress: float | None = None
    error: JobError | None = None
    manifest: dict[str, Any] | None = None
