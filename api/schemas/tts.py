from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class TTSRequest(BaseModel):
    text: str = Field(..., description="Text to speak; Chinese goes to the Mandarin voice, English to Piper.")
    voice: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")
    language: Literal["zh", "en", "other"] | None = Field(None, description="Override language routing.")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be empty")
        return value
