"""One conversation turn: recognise the message if it is audio, stream the reply, speak it by sentence.

Runs in a `converse` worker (workers/converse.py). The responder's text is read on a helper thread
so that this loop keeps checking, every 50 ms, that its turn is still the room's current one: a new
message or an interrupt (core.rooms.RoomStore.barge_in) ends the generation at once, and a sentence
cut after that is never queued (the push is conditional on the turn, in one Redis script).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace

from redis import Redis
from rq.job import JobStatus

from core.conversations.responders import ResponderFailed, TurnContext, load_responder
from core.conversations.sentences import SentenceCutter
from core.conversations.store import ConversationStore, Message, MessageStatus
from core.jobs import Kind, cancel_job, enqueue, fetch_job, new_job_id
from core.rooms import Room, RoomStore
from core.settings import Settings

log = logging.getLogger(__name__)
CHECK_S = 0.05


class Superseded(Exception):
    """The turn is no longer the room's current one (barge-in, interrupt, closed room)."""


@dataclass
class Speaker:
    """Queues a reply's sentences to its room, each as a TTS job (ahead of batch TTS) plus an utterance
    that plays once its speech exists; records them in the reply message as they are queued."""

    rooms: RoomStore
    conv: ConversationStore
    room: Room
    reply: Message
    turn: int | None  # None: not part of a conversation turn (a welcome)
    # Sentences a previous run of this turn already queued (its worker died): not queued twice.
    already: list[dict] = field(default_factory=list)
    cutter: SentenceCutter = field(default_factory=SentenceCutter)

    def feed(self, delta: str) -> None:
        self.reply.generated = (self.reply.generated or "") + delta
        self.rooms.event(self.room.id, "reply_delta", feed_only=True, message=self.reply.id, text=delta)
        for sentence in self.cutter.push(delta):
            self.say(sentence)

    def finish(self) -> None:
        for sentence in self.cutter.flush():
            self.say(sentence)

    def say(self, sentence: str) -> None:
        index = len(self.reply.sentences)
        if index < len(self.already):
            self.reply.sentences.append(self.already[index])
            return
        tts_job_id = new_job_id()
        settings = self.rooms.settings
        # The room's owner owns its speech (jobs and files), whoever's message it answers. The first
        # sentence goes ahead of waiting work; the others behind it, in order (each at the front
        # would put a reply's last sentence first: a script's three sentences queued at once were
        # synthesised last to first, the one the viewer waits for last).
        enqueue(settings, self.rooms.r, Kind.tts, {"text": sentence, "output_name": tts_job_id, "voice": None,
                                                   "language": self.room.language, "room_id": self.room.id},
                tts_job_id, admit=False, at_front=index == 0, owner=self.rooms.owner(self.room.id))
        utterance = self.rooms.say(self.room, turn=self.turn, tts_job_id=tts_job_id, message_id=self.reply.id,
                                   sentence=index)
        if utterance is None:
            cancel_job(self.rooms.r, tts_job_id)
            raise Superseded()
        self.reply.sentences.append({"text": sentence, "utterance": utterance.id, "tts_job_id": tts_job_id})
        self.conv.save(self.room.id, self.reply)
        self.rooms.event(self.room.id, "reply_sentence", feed_only=True, message=self.reply.id, index=index,
                         text=sentence, utterance=utterance.id, tts_job_id=tts_job_id)


def speak_text(redis: Redis, settings: Settings, room: Room, text: str, role_source: str = "welcome") -> Message:
    """Say a whole text in a room as an assistant message (a welcome): sentence by sentence."""
    rooms, conv = RoomStore(redis, settings), ConversationStore(redis, settings)
    reply = conv.add(room.id, "assistant", conv.turn(room.id), source=role_source, responder=role_source,
                     status=MessageStatus.GENERATING, sentences=[], generated="", language=room.language)
    speaker = Speaker(rooms, conv, room, reply, turn=None)
    speaker.feed(text)
    speaker.finish()
    reply.status = MessageStatus.COMPLETE
    conv.save(room.id, reply)
    return reply


class TurnRunner:
    def __init__(self, redis: Redis, settings: Settings, room_id: str, message_id: str, turn: int) -> None:
        self.r, self.settings = redis, settings
        self.rooms, self.conv = RoomStore(redis, settings), ConversationStore(redis, settings)
        self.room_id, self.message_id, self.turn = room_id, message_id, turn

    def current(self) -> bool:
        return self.rooms.is_open(self.room_id) and self.conv.is_current(self.room_id, self.turn)

    def run(self) -> dict:
        room = self.rooms.get(self.room_id)
        message = self.conv.get(self.room_id, self.message_id)
        if room is None or message is None or not self.rooms.is_open(self.room_id):
            return {"status": "room_closed"}
        if message.asr_job_id and message.status == MessageStatus.TRANSCRIBING:
            message = self._recognise(message)
            if message.status != MessageStatus.RECEIVED:
                return {"status": message.status, "message_id": self.message_id}
        if not self.current():
            return {"status": "superseded", "message_id": self.message_id}
        reply = self._reply_message(room)
        try:
            responder = self._answer(room, message, reply)
        except Superseded:
            reply.status = MessageStatus.INTERRUPTED
            self.conv.save(self.room_id, reply)
            self.rooms.event(self.room_id, "reply_end", feed_only=True, message=reply.id,
                             status=MessageStatus.INTERRUPTED)
            return {"status": MessageStatus.INTERRUPTED, "message_id": self.message_id, "reply_id": reply.id}
        reply.status, reply.responder = MessageStatus.COMPLETE, responder
        self.conv.save(self.room_id, reply)
        self._answered(message, reply)
        self.rooms.event(self.room_id, "reply_end", feed_only=True, message=reply.id, status=MessageStatus.COMPLETE,
                         sentences=len(reply.sentences), responder=responder)
        return {"status": MessageStatus.COMPLETE, "message_id": self.message_id, "reply_id": reply.id,
                "responder": responder, "sentences": len(reply.sentences)}

    def _answered(self, message: Message, reply: Message) -> None:
        """The user's message reads as answered once its reply is complete (the console shows it)."""
        message = self.conv.get(self.room_id, self.message_id) or message
        message.status, message.reply_id = MessageStatus.ANSWERED, reply.id
        self.conv.save(self.room_id, message)

    def _reply_message(self, room: Room) -> Message:
        """The reply to this message: a new one, or the one a previous run of this turn began."""
        for m in reversed(self.conv.messages(self.room_id, 6)):
            if m.get("reply_to") == self.message_id and m["role"] == "assistant":
                stored = self.conv.get(self.room_id, m["id"])
                stored.status = MessageStatus.GENERATING
                return stored
        reply = self.conv.add(self.room_id, "assistant", self.turn, reply_to=self.message_id,
                              status=MessageStatus.GENERATING,
                              responder=room.responder or self.settings.conversation_responder, sentences=[],
                              generated="", language=room.language)
        self.rooms.event(self.room_id, "reply_start", feed_only=True, message=reply.id, reply_to=self.message_id,
                         responder=reply.responder)
        return reply

    def _answer(self, room: Room, message: Message, reply: Message) -> str:
        """Stream the reply; on a failing responder, the script answers. Returns the responder."""
        self.conv.settle(self.room_id)
        ctx = TurnContext(room=room, user_text=message.text, message_id=self.message_id, language=room.language,
                          history=self.conv.context(self.room_id, exclude={self.message_id, reply.id}))
        name = room.responder or self.settings.conversation_responder
        speaker = Speaker(self.rooms, self.conv, room, reply, self.turn, already=list(reply.sentences or []),
                          cutter=SentenceCutter(first_clause_chars=self.settings.reply_first_clause_chars))
        reply.sentences, reply.generated = [], ""
        try:
            self._stream(load_responder(name, self.r, self.settings), ctx, speaker)
            return name
        except ResponderFailed as exc:
            if name == "script":
                self._error(reply, exc.code, str(exc))
                if not reply.sentences:
                    raise
                return name
            self._fall_back(ctx, speaker, name, exc)
            return "script"

    def _fall_back(self, ctx: TurnContext, speaker: Speaker, name: str, exc: ResponderFailed) -> None:
        """The script answers in place of what the failed responder had not said: its sentences
        already queued stay (they are, or will be, heard as they were), the text it generated after
        them (a sentence cut off mid-way, never queued) is dropped, not spoken before the script's."""
        reply, kept = speaker.reply, len(speaker.reply.sentences)
        log.warning("room %s: %s responder failed (%s) after %d sentences; the script answers",
                    self.room_id, name, exc, kept)
        self.rooms.event(self.room_id, "responder_fallback", message=reply.id, responder=name, to="script",
                         reason=exc.code, detail=str(exc)[:200], kept_sentences=kept)
        reply.fallback = {"from": name, "reason": exc.code, "kept_sentences": kept}
        joiner = " " if ctx.language == "en" else ""
        reply.generated = joiner.join(s["text"] for s in reply.sentences) + (joiner if kept else "")
        speaker.cutter = SentenceCutter(first_clause_chars=0 if kept else self.settings.reply_first_clause_chars)
        # After sentences of its own the reply needs no second acknowledgement: the script goes on.
        self._stream(load_responder("script", self.r, self.settings), replace(ctx, continues=bool(kept)), speaker)

    def _stream(self, responder, ctx: TurnContext, speaker: Speaker) -> None:
        deltas: queue.Queue = queue.Queue()
        cancel = threading.Event()
        threading.Thread(target=_pump, args=(responder.reply(ctx), deltas, cancel), daemon=True,
                         name=f"responder-{self.room_id[:8]}").start()
        started, got_any, total = time.monotonic(), False, 0
        try:
            while True:
                if not self.current():
                    raise Superseded()
                try:
                    kind, value = deltas.get(timeout=CHECK_S)
                except queue.Empty:
                    waited = time.monotonic() - started
                    if not got_any and waited > self.settings.llm_first_token_timeout_s:
                        raise ResponderFailed("llm_timeout", f"no reply text within {waited:.1f} s")
                    if waited > self.settings.llm_max_reply_s:
                        raise ResponderFailed("llm_too_slow", f"the reply took longer than {waited:.0f} s")
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                got_any, total = True, total + len(value)
                speaker.feed(value)
                if total >= self.settings.max_reply_chars:
                    break  # a runaway reply: what is cut so far is said, the rest is not generated
            speaker.finish()
        finally:
            cancel.set()

    def _recognise(self, message: Message) -> Message:
        job = fetch_job(self.r, message.asr_job_id)
        if job is None or job.status != JobStatus.FINISHED:
            code = ((job.error or {}).get("code") if job else None) or "asr_failed"
            reason = (job.error or {}).get("message") if job else "the ASR job is gone"
            message.status, message.error = MessageStatus.FAILED, {"code": code, "message": reason}
        elif not (job.result or {}).get("text", "").strip():
            message.status = MessageStatus.FAILED
            message.error = {"code": "no_speech", "message": "no speech was heard in the audio"}
        else:
            message.status, message.text = MessageStatus.RECEIVED, job.result["text"].strip()
            message.language = job.result.get("language")
        self.conv.save(self.room_id, message)
        if message.status == MessageStatus.RECEIVED:
            self.rooms.event(self.room_id, "user_text", feed_only=True, message=message.id, text=message.text,
                             source="audio")
        else:
            self.rooms.event(self.room_id, "message_failed", message=message.id, code=message.error["code"],
                             detail=message.error["message"])
        return message

    def _error(self, reply: Message, code: str, detail: str) -> None:
        reply.error = {"code": code, "message": detail[:300]}
        self.rooms.event(self.room_id, "reply_error", message=reply.id, code=code, detail=detail[:200])


def _pump(deltas, out: queue.Queue, cancel: threading.Event) -> None:
    try:
        for delta in deltas:
            if cancel.is_set():
                break
            out.put(("delta", delta))
        out.put(("end", None))
    except ResponderFailed as exc:
        out.put(("error", exc))
    except Exception as exc:  # a responder bug must end the turn with an error, not hang it
        log.exception("responder failed")
        out.put(("error", ResponderFailed("responder_error", str(exc)[:200])))
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()  # ends the LLM's HTTP stream when the turn stopped reading it
