from __future__ import annotations

from pydantic import BaseModel


class FileOut(BaseModel):
    file: str
    legacy_path: str
    url: str
    size_bytes: int
    duration_s: float
