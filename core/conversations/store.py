"""A room's conversation in Redis: messages in order, and what of each reply was actually said.

A reply is written by the turn that generates it (its sentences, as they are cut); whether each
sentence was spoken is written by the publisher that speaks it (`mark_said`), in a separate hash,
so the two never overwrite each other. A reply's `text` is what viewers heard: its spoken
sentences and the heard part of one cut short by an interrupt. Keys: core/rooms.py.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from redis import Redis

from core.rooms import Utterance, UtteranceStatus, room_key
from core.settings import Settings

# A sentence's states are its utterance's (core.rooms.UtteranceStatus); these no longer change.
FINAL = {UtteranceStatus.SPOKEN, UtteranceStatus.CUT, UtteranceStatus.FAILED}
SPEAKING_JSON = json.dumps(UtteranceStatus.SPEAKING).encode()  # how a `said` value spells it


class MessageStatus(str, Enum):
    """A message's status. A user's: received or transcribing -> answered (its reply is complete) |
    failed. A reply's: generating -> complete (generated) | interrupted | failed; as read, a reply
    being said reads as speaking and one said in full as spoken."""

    RECEIVED = "received"
    TRANSCRIBING = "transcribing"
    ANSWERED = "answered"
    GENERATING = "generating"
    COMPLETE = "complete"
    SPEAKING = "speaking"
    SPOKEN = "spoken"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


@dataclass
class Message:
    """One message of a room's conversation: the user's, or the room's reply (`assistant`). Written
    by the turn that makes it (mutable while it does), serialised by ConversationStore alone."""

    id: str
    role: str  # user | assistant
    turn: int
    created_at: float
    status: MessageStatus = MessageStatus.RECEIVED
    text: str = ""  # user: what was typed or recognised (a reply's text is read from what was said)
    source: str | None = None  # text, audio, voice, or for the room's own words: welcome
    language: str | None = None
    audio: str | None = None  # a spoken message's file
    asr_job_id: str | None = None
    reply_to: str | None = None  # a reply: the user's message it answers
    reply_id: str | None = None  # a user's message: its reply, once complete
    responder: str | None = None
    sentences: list[dict[str, Any]] | None = None  # a reply's (user messages have none): text, utterance, tts_job_id
    generated: str | None = None  # a reply: everything the responder generated
    error: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None  # the responder that failed and why (the script answered)
    job_id: str | None = None  # the converse job answering a user's message (as posted; not stored)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "job_id"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        known = {k: v for k, v in data.items() if k in _MESSAGE_FIELDS}
        return cls(**{**known, "status": MessageStatus(data.get("status", MessageStatus.RECEIVED))})


_MESSAGE_FIELDS = {f.name for f in fields(Message)}


def _said_field(message_id: str, index: int) -> str:
    return f"{message_id}:{index}"


def mark_said(redis: Redis, settings: Settings, room_id: str, utterance: Utterance, status: UtteranceStatus,
              fraction: float | None = None) -> None:
    """The publisher's report on one sentence of a reply (no-op for other utterances)."""
    message_id, index = utterance.message_id, utterance.sentence
    if not message_id or index is None:
        return
    value = {"status": status, **({"fraction": round(fraction, 3)} if fraction is not None else {})}
    key = room_key(room_id, "said")
    with redis.pipeline() as p:
        p.hset(key, _said_field(message_id, int(index)), json.dumps(value))
        p.expire(key, settings.conversation_retention_s)  # the room may close meanwhile
        p.execute()


class ConversationStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.r = redis
        self.settings = settings

    # ---- turns ----
    def turn(self, room_id: str) -> int:
        return int(self.r.get(room_key(room_id, "turn")) or 0)

    def is_current(self, room_id: str, turn: int) -> bool:
        return self.turn(room_id) == turn

    # ---- messages ----
    def add(self, room_id: str, role: str, turn: int, **what) -> Message:
        """A new message (`what`: its other Message fields)."""
        message = Message(id=uuid.uuid4().hex, role=role, turn=turn, created_at=time.time(), **what)
        keep = self.settings.conversation_max_messages
        with self.r.pipeline() as p:
            p.hset(room_key(room_id, "msg"), message.id, _dumps(message))
            p.rpush(room_key(room_id, "messages"), message.id)
            p.lrange(room_key(room_id, "messages"), 0, -keep - 1)
            p.ltrim(room_key(room_id, "messages"), -keep, -1)
            dropped = p.execute()[2]
        if dropped:
            self._forget(room_id, [d.decode() for d in dropped])
        return message

    def _forget(self, room_id: str, message_ids: list[str]) -> None:
        """Messages trimmed from the history go with their sentences' reports (a long-lived room
        would otherwise grow its `said` hash for ever)."""
        said = [f for mid in message_ids for f, _ in self.r.hscan_iter(room_key(room_id, "said"), match=f"{mid}:*")]
        with self.r.pipeline() as p:
            p.hdel(room_key(room_id, "msg"), *message_ids)
            if said:
                p.hdel(room_key(room_id, "said"), *said)
            p.execute()

    def retract(self, room_id: str, message_id: str) -> None:
        """A message taken back (a voice turn posted at a pause, and the speaker went on): it and any
        reply to it leave the history, so neither a reply nor the LLM's context sees it. Its id is
        remembered: a reply its turn adds after this (the turn was already past its checks) is
        never listed either."""
        gone = [message_id] + [m["id"] for m in self.messages(room_id, 6) if m.get("reply_to") == message_id]
        with self.r.pipeline() as p:
            p.sadd(room_key(room_id, "retracted"), message_id)
            p.expire(room_key(room_id, "retracted"), self.settings.conversation_retention_s)
            for mid in gone:
                p.lrem(room_key(room_id, "messages"), 1, mid)
            p.hdel(room_key(room_id, "script"), message_id)  # the script's question is asked again
            p.execute()
        self._forget(room_id, gone)

    def save(self, room_id: str, message: Message) -> None:
        self.r.hset(room_key(room_id, "msg"), message.id, _dumps(message))

    def get(self, room_id: str, message_id: str) -> Message | None:
        raw = self.r.hget(room_key(room_id, "msg"), message_id)
        return Message.from_dict(json.loads(raw)) if raw else None

    def exists(self, room_id: str) -> bool:
        return bool(self.r.exists(room_key(room_id, "messages")))

    def messages(self, room_id: str, limit: int | None = None) -> list[dict]:
        """Messages oldest first as clients read them (GET .../messages): replies with what was said
        of them, their text what viewers heard and their status read from that."""
        ids = self.r.lrange(room_key(room_id, "messages"), -(limit or 0) if limit else 0, -1)
        if not ids:
            return []
        raws = self.r.hmget(room_key(room_id, "msg"), ids)
        said = {k.decode(): json.loads(v) for k, v in self.r.hgetall(room_key(room_id, "said")).items()}
        retracted = {m.decode() for m in self.r.smembers(room_key(room_id, "retracted"))}
        current = self.turn(room_id)
        listed = [Message.from_dict(json.loads(raw)).to_dict() for raw in raws if raw]
        return [_with_said(m, said, current) for m in listed
                if m["id"] not in retracted and m.get("reply_to") not in retracted]

    def settle(self, room_id: str, timeout_s: float = 1.0) -> None:
        """Wait (briefly) until no sentence reads as being spoken: after a barge-in, the publisher
        reports within one poll how much of the cut sentence was heard, and the history the next
        reply continues from should say so."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(SPEAKING_JSON in v for v in self.r.hvals(room_key(room_id, "said"))):
                return
            time.sleep(0.03)

    def context(self, room_id: str, exclude: set[str] = frozenset()) -> list[dict]:
        """The chat history an LLM continues: what the user said and what viewers heard."""
        out = []
        for m in self.messages(room_id, self.settings.conversation_context_messages + len(exclude)):
            if m["text"] and m["id"] not in exclude:
                out.append({"role": m["role"], "content": m["text"]})
        return out


def _dumps(message: Message) -> str:
    return json.dumps(message.to_dict(), ensure_ascii=False)


def _with_said(message: dict, said: dict[str, dict], current_turn: int) -> dict:
    if message["role"] != "assistant":
        return message
    superseded = message["turn"] != current_turn
    parts, states = [], []
    for i, sentence in enumerate(message.get("sentences", [])):
        state = said.get(_said_field(message["id"], i), {"status": UtteranceStatus.QUEUED})
        if superseded and state["status"] in (UtteranceStatus.QUEUED, UtteranceStatus.SPEAKING):
            dropped = state["status"] == UtteranceStatus.QUEUED
            state = {**state, "status": UtteranceStatus.DROPPED if dropped else UtteranceStatus.CUT}
        states.append({"text": sentence["text"], "utterance": sentence.get("utterance"),
                       "tts_job_id": sentence.get("tts_job_id"), **state})
        if state["status"] == UtteranceStatus.SPOKEN:
            parts.append(sentence["text"])
        elif state["status"] == UtteranceStatus.CUT:
            heard = sentence["text"][:max(0, int(len(sentence["text"]) * state.get("fraction", 0.0)))]
            if heard:
                parts.append(heard + "…")
    joiner = " " if message.get("language") == "en" else ""
    out = {**message, "sentences": states, "text": joiner.join(parts)}
    out["status"] = _reply_status(message, states, superseded)
    return out


def _reply_status(message: dict, states: list[dict], superseded: bool) -> MessageStatus:
    generation = MessageStatus(message.get("status", MessageStatus.GENERATING))
    if generation == MessageStatus.FAILED and not states:
        return MessageStatus.FAILED
    saying = any(s["status"] in (UtteranceStatus.QUEUED, UtteranceStatus.SPEAKING) for s in states)
    if saying or (generation == MessageStatus.GENERATING and not superseded):
        started = any(s["status"] != UtteranceStatus.QUEUED for s in states)
        return MessageStatus.SPEAKING if started else generation
    if all(s["status"] == UtteranceStatus.SPOKEN for s in states) and generation == MessageStatus.COMPLETE:
        return MessageStatus.SPOKEN
    return MessageStatus.INTERRUPTED if superseded or generation == MessageStatus.INTERRUPTED else generation


class MaterialStore:
    """A room's material for the `faq` responder (core/conversations/faq.py): one JSON value, gone
    with the room."""

    def __init__(self, redis: Redis) -> None:
        self.r = redis

    def get(self, room_id: str) -> dict | None:
        raw = self.r.get(room_key(room_id, "material"))
        return json.loads(raw) if raw else None

    def put(self, room_id: str, material: dict) -> None:
        self.r.set(room_key(room_id, "material"), json.dumps(material, ensure_ascii=False))

    def delete(self, room_id: str) -> bool:
        return bool(self.r.delete(room_key(room_id, "material")))
