from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import AudioOrText


SYSTEM_PROMPT_CHARS = 4000


class RoomCreate(BaseModel):
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-\u4e00-\u9fff]{1,64}$")
    avatar_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    ttl_s: int | None = Field(None, ge=10, le=86400, description="close after this long without activity")
    language: Literal["zh", "en"] | None = Field(None, description="what the room speaks and hears "
                                                 "(default: MTL_CONVERSATION_DEFAULT_LANGUAGE)")
    responder: Literal["script", "llm", "faq"] | None = Field(None, description="who answers messages: script "
                                                              "(interview questions), faq (the room's material, "
                                                              "offline) or llm (default: MTL_CONVERSATION_RESPONDER)")
    system_prompt: str | None = Field(None, max_length=SYSTEM_PROMPT_CHARS, description="llm responder: the system prompt")
    llm_model: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9_.:/@+\-]+$",
                                  description="llm responder: the model (the server URL and key are settings)")
    job: str | None = Field(None, max_length=100, description="script responder: the position its questions are for")
    welcome: str | None = Field(None, max_length=2000, description="said once the room's stream is up")
    material: dict[str, Any] | None = Field(None, description="faq responder: the operator's material "
                                            "{products, qa, shop} (as PUT /v1/rooms/{id}/material takes)")
    barge_in: bool = Field(True, description="speech heard on the room's audio input (WS /v1/rooms/{id}/audio) "
                           "interrupts what the room is saying")
    keep_recordings: bool = Field(False, description="keep each utterance heard on the room's audio input as a "
                                  "16 kHz WAV under uploads/ (named by the `final` event and the message, owned by "
                                  "the speaker's key, expiring as uploads do); off: audio is never written to disk")


class RoomOut(BaseModel):
    id: str
    zbjname: str
    username: str
    stream_key: str
    avatar_id: str
    ttl_s: int
    persistent: bool
    created_at: float
    language: str = "zh"
    responder: str | None = None
    system_prompt: str | None = None
    llm_model: str | None = None
    job: str | None = None
    barge_in: bool = True
    keep_recordings: bool = False
    open: bool
    publisher: str | None = None
    pending_utterances: int = 0
    urls: dict[str, str]
    state: Literal["idle", "speaking", "dark"] = "dark"  # dark: open, but its stream is not on air
    # Why a dark room is dark: starting, reconnecting, avatar_error, no_stream_worker,
    # stream_capacity_full (more rooms open than the stream workers publish) or no_publisher.
    dark_reason: str | None = None
    speaking: bool = False
    publishing: bool | None = None  # the media server has the room's stream (None: not known)
    viewers: int | None = None  # RTMP + HTTP-FLV viewers (HLS viewers are not counted)
    viewers_by_route: dict[str, int] = {}
    metrics_label: str | None = Field(None, description="the room's `room` label in /metrics (a one-way hash "
                                      "of its id, so the metrics never name a stream key)")


class SayRequest(AudioOrText):
    text: str | None = None
    audio: str | None = Field(None, description="a file the service owns, e.g. tests/<id>.wav")


class SayAccepted(BaseModel):
    utterance_id: str
    room_id: str
    tts_job_id: str | None = None
    duration_s: float | None = None


class RoomEvent(BaseModel):
    event: str
    t: float
    model_config = {"extra": "allow"}


class InterruptOut(BaseModel):
    room_id: str
    generation: int
    details: dict[str, Any] = {}
