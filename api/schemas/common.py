from __future__ import annotations

from pydantic import BaseModel, model_validator


class AudioOrText(BaseModel):
    """Speech given as a file the service owns or as text to synthesise, never both."""

    audio: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.audio) == bool(self.text and self.text.strip()):
            raise ValueError("give exactly one of `audio` or `text`")
        return self
