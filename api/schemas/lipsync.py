from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import AudioOrText


class LipSyncRequest(AudioOrText):
    avatar_id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    audio: str | None = Field(None, description="a file the service owns, e.g. tests/<id>.wav or uploads/<id>.mp3")
    text: str | None = Field(None, description="instead of audio: text to synthesise first")
    # None: the setting (auto = the presenter's own mouth when the avatar is enrolled, else warp)
    engine: Literal["auto", "exemplar", "warp", "musetalk"] | None = None
    room: str | None = Field(None, pattern=r"^[A-Za-z0-9_*.-]{1,128}$",
                             description="continue the avatar's cycle where this room's last utterance ended")
    cycle_start: int | None = Field(
        None, ge=0, description="the avatar cycle position the render starts at (0 to the avatar's "
        "`manifest.cycle_length` - 1). Without it and without `room` a render starts at the template's "
        "first frame, so the same request always gives the same video; with `room` it continues that "
        "room's cycle. Out of range: 422 `bad_cycle_start`")


class MouthFrame(BaseModel):
    t: float
    open: float
    width: float


class MouthSeries(BaseModel):
    fps: int
    frames: list[MouthFrame]
