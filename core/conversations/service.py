"""What the API does for conversations: accept a message (barge-in), welcome a new room."""

from __future__ import annotations

from redis import Redis
from rq.job import Dependency

from core.conversations.store import ConversationStore, Message, MessageStatus
from core.conversations.turn import speak_text
from core.jobs import Kind, enqueue, new_job_id
from core.limits import check_disk, check_queue
from core.rooms import Room, RoomStore
from core.errors import Invalid
from core.settings import Settings


class MessageRejected(Invalid):
    """A message (or welcome) text the room will not speak: empty or too long."""


def clean_text(settings: Settings, text: str | None, what: str = "message") -> str:
    text = (text or "").strip()
    if not text:
        raise MessageRejected("empty_text", f"the {what} text is empty")
    if len(text) > settings.max_message_chars:
        raise MessageRejected("text_too_long", f"the {what} has {len(text)} characters; the limit is "
                              f"{settings.max_message_chars}")
    return text


def post_message(redis: Redis, settings: Settings, room: Room, text: str | None = None,
                 audio_ref: str | None = None, owner: str | None = None, source: str | None = None,
                 recording: str | None = None) -> Message:
    """Record a user message, stop whatever the room is saying or generating, and enqueue the turn
    that answers it (after its recognition, for audio). Refusals (limits) come before the barge-in,
    so a refused message interrupts nothing. `owner`: the poster's key hash, owner of the jobs;
    `source`: how text came (`voice`: recognised live); `recording`: the kept audio of a voice message."""
    if audio_ref is None:
        text = clean_text(settings, text)
    check_disk(settings)
    check_queue(settings, redis, Kind.converse.value)
    if audio_ref is not None:
        check_queue(settings, redis, Kind.asr.value)
    rooms, conv = RoomStore(redis, settings), ConversationStore(redis, settings)
    _gen, turn = rooms.barge_in(room.id, reason="message")
    asr_job_id = None
    if audio_ref is not None:
        asr_job_id = new_job_id()
        enqueue(settings, redis, Kind.asr, {"file": audio_ref, "output_name": asr_job_id, "language": room.language},
                asr_job_id, admit=False, at_front=True, owner=owner)
    source = "audio" if audio_ref else source or "text"
    status = MessageStatus.TRANSCRIBING if audio_ref else MessageStatus.RECEIVED
    message = conv.add(room.id, "user", turn, text=text or "", source=source, status=status,
                       audio=audio_ref or recording, asr_job_id=asr_job_id)
    rooms.event(room.id, "user_message", feed_only=True, message=message.id, source=message.source, turn=turn)
    if text:
        rooms.event(room.id, "user_text", feed_only=True, message=message.id, text=text, source=source)
    # The turn runs after the recognition whatever its outcome: a failed or silent one is reported.
    depends = Dependency(jobs=[asr_job_id], allow_failure=True) if asr_job_id else None
    job_id = enqueue(settings, redis, Kind.converse, {"room_id": room.id, "message_id": message.id, "turn": turn},
                     depends_on=depends, admit=False, owner=owner)
    rooms.touch(room)
    message.job_id = job_id
    return message


def welcome(redis: Redis, settings: Settings, room: Room, text: str) -> Message:
    """The room's first words, queued now and spoken as soon as its stream is up."""
    return speak_text(redis, settings, room, clean_text(settings, text, "welcome"))


def history(redis: Redis, settings: Settings, room_id: str) -> list[dict]:
    return ConversationStore(redis, settings).messages(room_id)
