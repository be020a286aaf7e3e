from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

MS_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
MAX_INDEX = 100_000


class FeedbackRow(BaseModel):
    ms_id: str
    index: int
    content: str  # the summary
    sort: int  # the score, 0-100
    url: str | None = None  # the frame image
    components: dict[str, float | None]
    findings: list[str]
    measures: dict[str, Any] | None = None
    language: str | None = None
    analyser: str | None = None
    source: str | None = None
    job_id: str | None = None
    created_at: datetime | None = None


class FeedbackList(BaseModel):
    ms_id: str
    results: list[FeedbackRow]
