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

from redis import Redis

from core.rooms import room_key
from core.settings import Settings

# Sentence states: queued -> speaking -> spoken | cut (interrupted while spoken) | failed;
# a queued sentence of a superseded turn reads as dropped (it will never play).
FINAL = {"spoken", "cut", "failed"}


def _said_field(message_id: str, index: int) -> str:
    return f"{message_id}:{index}"


def mark_said(redis: Redis, settings: Settings, room_id: str, utterance: dict, status: str,
              fraction: float | None = None) -> None:
    """The publisher's report on one sentence of a reply (no-op for other utterances)."""
    message_id, index = utterance.get("message_id"), utterance.get("sentence")
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
    def add(self, room_id: str, role: str, turn: int, **fields) -> dict:
        message = {"id": uuid.uuid4().hex, "role": role, "turn": turn, "created_at": time.time(), **fields}
        keep = self.settings.conversation_max_messages
        with self.r.pipeline() as p:
            p.hset(room_key(room_id, "msg"), message["id"], json.dumps(message, ensure_ascii=False))
            p.rpush(room_key(room_id, "messages"), message["id"])
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
        reply to it leave the history, so neither a reply nor the LLM's context sees it."""
        gone = [message_id] + [m["id"] for m in self.messages(room_id, 6) if m.get("reply_to") == message_id]
        with self.r.pipeline() as p:
            for mid in gone:
                p.lrem(room_key(room_id, "messages"), 1, mid)
            p.hdel(room_key(room_id, "script"), message_id)  # the script's question is asked again
            p.execute()
        self._forget(room_id, gone)

    def save(self, room_id: str, message: dict) -> None:
        self.r.hset(room_key(room_id, "msg"), message["id"], json.dumps(message, ensure_ascii=False))

    def get(self, room_id: str, message_id: str) -> dict | None:
        raw = self.r.hget(room_key(room_id, "msg"), message_id)
        return json.loads(raw) if raw else None

    def exists(self, room_id: str) -> bool:
        return bool(self.r.exists(room_key(room_id, "messages")))

    def messages(self, room_id: str, limit: int | None = None) -> list[dict]:
        """Messages oldest first, replies with what was said of them."""
        ids = self.r.lrange(room_key(room_id, "messages"), -(limit or 0) if limit else 0, -1)
        if not ids:
            return []
        raws = self.r.hmget(room_key(room_id, "msg"), ids)
        said = {k.decode(): json.loads(v) for k, v in self.r.hgetall(room_key(room_id, "said")).items()}
        current = self.turn(room_id)
        return [_with_said(json.loads(raw), said, current) for raw in raws if raw]

    def settle(self, room_id: str, timeout_s: float = 1.0) -> None:
        """Wait (briefly) until no sentence reads as being spoken: after a barge-in, the publisher
        reports within one poll how much of the cut sentence was heard, and the history the next
        reply continues from should say so."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(b'"speaking"' in v for v in self.r.hvals(room_key(room_id, "said"))):
                return
            time.sleep(0.03)

    def context(self, room_id: str, exclude: set[str] = frozenset()) -> list[dict]:
        """The chat history an LLM continues: what the user said and what viewers heard."""
        out = []
        for m in self.messages(room_id, self.settings.conversation_context_messages + len(exclude)):
            if m["text"] and m["id"] not in exclude:
                out.append({"role": m["role"], "content": m["text"]})
        return out


def _with_said(message: dict, said: dict[str, dict], current_turn: int) -> dict:
    if message["role"] != "assistant":
        return message
    superseded = message["turn"] != current_turn
    parts, states = [], []
    for i, sentence in enumerate(message.get("sentences", [])):
        state = said.get(_said_field(message["id"], i), {"status": "queued"})
        if superseded and state["status"] in ("queued", "speaking"):
            state = {**state, "status": "dropped" if state["status"] == "queued" else "cut"}
        states.append({"text": sentence["text"], "utterance": sentence.get("utterance"),
                       "tts_job_id": sentence.get("tts_job_id"), **state})
        if state["status"] == "spoken":
            parts.append(sentence["text"])
        elif state["status"] == "cut":
            heard = sentence["text"][:max(0, int(len(sentence["text"]) * state.get("fraction", 0.0)))]
            if heard:
                parts.append(heard + "…")
    joiner = " " if message.get("language") == "en" else ""
    out = {**message, "sentences": states, "text": joiner.join(parts)}
    out["status"] = _reply_status(message, states, superseded)
    return out


def _reply_status(message: dict, states: list[dict], superseded: bool) -> str:
    generation = message.get("status", "generating")
    if generation == "failed" and not states:
        return "failed"
    if any(s["status"] in ("queued", "speaking") for s in states) or (generation == "generating" and not superseded):
        return "speaking" if any(s["status"] != "queued" for s in states) else generation
    if all(s["status"] == "spoken" for s in states) and generation == "complete":
        return "spoken"
    return "interrupted" if superseded or generation == "interrupted" else generation


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
