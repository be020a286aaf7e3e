from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class MessageIn(BaseModel):
    """Text, or a spoken message: a file the service owns (e.g. `uploads/<id>.wav` from POST /v1/files).
    A multipart form with an uploaded `file` (or a `text` field) is accepted too."""

    text: str | None = Field(None, description="what the user says or types (1..max_message_chars)")
    audio: str | None = Field(None, description="a spoken message: a file the service owns")


class MessageAccepted(BaseModel):
    message_id: str
    room_id: str
    turn: int = Field(description="the conversation turn this message opened (any earlier reply is interrupted)")
    job_id: str = Field(description="the converse job that answers it")
    asr_job_id: str | None = None
    status: Literal["received", "transcribing"]
    ws_url: str = Field(description="the room's WebSocket feed")


class Sentence(BaseModel):
    text: str
    status: str = Field(description="queued, speaking, spoken, cut (interrupted while spoken), dropped or failed")
    fraction: float | None = Field(None, description="for a cut sentence: the share of it that was spoken")
    utterance: str | None = None
    tts_job_id: str | None = Field(None, description="the TTS job that synthesised it (GET /v1/jobs/{id})")


class MessageOut(BaseModel):
    id: str
    role: Literal["user", "assistant"]
    text: str = Field(description="user: what was typed or recognised; assistant: what viewers heard of the reply")
    status: str = Field(description="user: received, transcribing, answered (its reply is complete), failed; assistant: generating, speaking, "
                                    "spoken, interrupted, complete (generated, not all spoken yet) or failed")
    turn: int
    created_at: float
    source: str | None = Field(None, description="text, audio, or for the room's own words: welcome")
    responder: str | None = None
    fallback: dict[str, Any] | None = Field(None, description="the responder that failed and why (the script answered in its place): "
                                               "{from, reason, kept_sentences (its sentences queued before it failed, kept)}")
    generated: str | None = Field(None, description="assistant: everything the responder generated")
    sentences: list[Sentence] | None = None
    reply_to: str | None = None
    error: dict[str, Any] | None = None
    audio: str | None = None
    model_config = {"extra": "allow"}
