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
    prepared_at: float | None = None  # when its preparation last finished (unix s); the list is newest first


class AvatarFace(BaseModel):
    """Landmarks of the avatar's first frame in its pixels (x, y): enough for a client to animate
    the portrait's mouth from a render's mouth series (`GET /v1/jobs/{id}/mouth`)."""

    width: int
    height: int
    fps: int
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]
    upper_inner: tuple[float, float]
    lower_inner: tuple[float, float]
    upper_outer: tuple[float, float]
    lower_outer: tuple[float, float]
    chin: tuple[float, float]
    nose_tip: tuple[float, float]
    lips_outer: list[tuple[float, float]]
    jaw: list[tuple[float, float]]
