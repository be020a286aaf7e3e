from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.jobs import JobError


class AvatarAccepted(BaseModel):
    avatar_id: str
    job_id: str
    status_url: str
    avatar_url: str


class EnrollmentState(BaseModel):
    """Whether the avatar's learned mouth is in this release's bank format (lipsync/upkeep.py)."""

    current: bool | None = Field(None, description="true: enrolled in the current bank format; false: an older "
                                 "one (the avatar speaks with warp until it re-enrolled); null: never enrolled")
    state: Literal["current", "outdated", "reenrolling", "none"]
    version: str | None = Field(None, description="the bank format it was enrolled in")
    expected_version: str
    sample_kept: bool = Field(..., description="the clip it learned from is kept, so it can re-enroll itself")
    reenroll_job_id: str | None = Field(None, description="the background `avatar` job re-enrolling it")


class AvatarOut(BaseModel):
    id: str
    status: str  # queued | started | ready | failed
    job_id: str | None = None
    progress: float | None = None
    error: JobError | None = None
    manifest: dict[str, Any] | None = None
    prepared_at: float | None = None  # when its preparation last finished (unix s); the list is newest first
    enrollment_current: bool | None = Field(None, description="shorthand for enrollment_state.current")
    enrollment_state: EnrollmentState | None = None


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
