from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from core.interviews import MAX_QUESTIONS


class InterviewCreate(BaseModel):
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-\u4e00-\u9fff]{1,64}$")
    job: str = Field(..., min_length=1, max_length=100, description="the job title, e.g. 软件工程师")
    count: int = Field(..., ge=1, le=MAX_QUESTIONS, description="number of questions")
    language: Literal["zh", "en"] | None = Field(None, description="default: the job text's language")
    avatar_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    ttl_s: int | None = Field(None, ge=10, le=86400, description="close the room after this long without activity")


class FileRefs(BaseModel):
    file: str  # <kind>/<name>
    legacy_path: str  # tests/<name>
    url: str  # /v1/files/<kind>/<name>
    job_id: str | None = None


class QuestionOut(BaseModel):
    index: int
    text: str
    status: Literal["ready", "rendering", "failed", "missing"]
    progress: float
    error: str | None = None
    speech: FileRefs
    clip: FileRefs


class GeneratorInfo(BaseModel):
    used: str
    requested: str
    family: str | None = None
    fallback_reason: str | None = None
    failed_attempts: list[str] = []


class InterviewOut(BaseModel):
    id: str
    zbjname: str
    room_id: str
    room_open: bool
    urls: dict[str, str] = {}
    username: str
    job: str
    language: str
    count: int
    avatar_id: str
    generator: GeneratorInfo
    status: Literal["ready", "rendering", "failed"]  # failed: at least one clip failed or is gone
    progress: float
    questions: list[QuestionOut]
    created_at: float


class PlayRequest(BaseModel):
    clip: int = Field(..., description="a question index from 0, or a stock clip id 96..99")


class PlayAccepted(BaseModel):
    utterance_id: str
    room_id: str
    clip: str
    duration_s: float


class StockClipOut(BaseModel):
    key: str
    name: str
    text: str
    status: Literal["ready", "rendering", "failed", "missing"]
    renders: int
    lipsync_job_id: str | None = None
    clip_url: str
