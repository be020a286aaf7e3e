"""Talk to a room: its live audio input, `WS /v1/rooms/{room_ref}/audio`.

Binary frames: PCM s16le mono 16 kHz, 20-100 ms each (640-3200 bytes). Text frames: JSON control,
``{"type": "end"}`` (the utterance ends now; the socket stays open for the reply) and
``{"type": "config", "language": "zh"|"en"}`` (the language heard; default the room's, or
``?language=``). The server sends JSON events: ``speech_start``, ``partial`` (text so far),
``speech_end``, ``final`` (the recognised text, posted to the room as a message, as typed ones are),
each with ``"speaker": "user"``; and the room's feed events (with their feed ``id``), so one socket
shows the reply too. Close codes: 4400 a frame that is not that audio or control, 4401 / 4404 as the
feed, 4408 no audio for ``voice_idle_timeout_s`` mid-stream, 4409 the room already has a speaker,
4429 audio faster than ``voice_max_speed`` x real time, 1000 the room closed, 1011 the room's state
cannot be read (Redis lost), 1013 too many sockets.
Audio is kept in memory for the utterance only and never written to disk, unless the room was created
with ``keep_recordings``: then each utterance is also kept as a 16 kHz WAV under uploads/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from api.sockets import follow_feed, socket_room
from core.conversations.service import post_message
from core.conversations.store import ConversationStore
from core.errors import DomainError
from core.files import FileOwners
from core.media import write_wav
from core.limits import Refused
from core.rooms import Room, RoomStore
from core.voice import RATE, Endpointer, recognise, recognition_context, unqueue, warm

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/rooms", tags=["conversations"])
MIN_FRAME, MAX_FRAME = RATE * 2 * 20 // 1000, RATE * 2 * 100 // 1000  # bytes in 20 ms and 100 ms
LANGUAGES = ("zh", "en")
FEED_BACKLOG = 500  # feed events waiting to be sent to one socket, at most


class Close(Exception):
    """Ends the socket with a close code (and an `error` event saying why)."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


@router.websocket("/{room_ref}/audio")
async def room_audio(websocket: WebSocket, room_ref: str) -> None:
    """The room's live audio input (see the module's description and the OpenAPI description)."""
    opened = await socket_room(websocket)
    if opened is None:
        return
    store, room, caller = opened
    state = websocket.app.state
    if getattr(state, "voice_count", 0) >= store.settings.max_voice_sockets:
        await websocket.close(code=1013, reason="too many audio sockets on this API process; retry")
        return
    await websocket.accept()
    token = uuid.uuid4().hex
    if not await run_in_threadpool(store.claim_speaker, room.id, token):
        await _refuse(websocket, Close(4409, "speaker_busy", "this room already has a speaker socket; one at a time"))
        return
    state.voice_count = getattr(state, "voice_count", 0) + 1
    try:
        await VoiceSocket(websocket, store, room, token, caller.owner).run()
    finally:
        state.voice_count -= 1
        # Also when this task is cancelled (client gone mid-await, server stopping): the release runs
        # to its end in the thread pool even if this await is cancelled again, so the room takes a new
        # speaker at once instead of after voice_speaker_ttl_s.
        release = asyncio.ensure_future(run_in_threadpool(store.release_speaker, room.id, token))
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            log.info("room %s: speaker socket cancelled; its claim is being released", room.id)
            raise


async def _outcome(posting: asyncio.Future) -> dict | None:
    """What a pause's posting came to (None also when it failed or was cancelled)."""
    await asyncio.wait([posting])
    return None if posting.cancelled() or posting.exception() is not None else posting.result()


async def _refuse(websocket: WebSocket, close: Close) -> None:
    try:
        await websocket.send_json({"event": "error", "code": close.error, "message": close.message})
        await websocket.close(code=close.code, reason=close.message[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass


class VoiceSocket:
    """One speaker's connection: audio in, endpointing, recognition, the message, the feed out."""

    def __init__(self, websocket: WebSocket, store: RoomStore, room: Room, token: str, owner: str | None) -> None:
        self.ws, self.store, self.room, self.token = websocket, store, room, token
        self.owner = owner  # the speaker's key hash: owner of the message's jobs, as for a typed message
        self.settings = store.settings
        hint = websocket.query_params.get("language")
        self.language = hint if hint in LANGUAGES else room.language
        self.endpointer = Endpointer(self.settings)
        self.out: asyncio.Queue = asyncio.Queue()
        self.stream_start: float | None = None  # wall time the current stream of frames began
        self.received_s = 0.0  # audio received since then
        self.utterance = 0  # counts utterances, so a late decode of an older one is dropped
        self.partial_at = 0  # utterance samples when the last partial decode started
        self.partials_queued = 0  # decodes on the partials' thread not finished (running or queued)
        self.early_from_partial = False  # the early decode is the partial begun as the pause's silence did
        self.decodes: dict[str, int] = {}  # decodes begun for the current utterance, by kind (in its final)
        # The last partial decode begun in silence: (utterance, voiced samples it covers, decode).
        self.silence_partial: tuple[int, int, asyncio.Future] | None = None
        self.early: tuple[int, int, asyncio.Future] | None = None  # (utterance, samples, decode) at a pause
        self.preempt: tuple[int, int, asyncio.Future] | None = None  # (utterance, samples, posting) at a pause
        self.room_closed = False
        self.feed_lost = False
        self.last_frame = 0.0
        self.finishing: asyncio.Future | None = None  # the last utterance's final text and message
        self.context: str | None = None  # the room's context for recognising the current utterance

    async def run(self) -> None:
        sender = asyncio.ensure_future(self._send_loop())
        feed = asyncio.ensure_future(self._feed())
        warm(self.settings)  # the first utterance finds the model loaded
        self.emit("listening", room_id=self.room.id, sample_rate=RATE, frame_ms=[20, 100], language=self.language,
                  end_silence_ms=self.settings.voice_end_silence_ms, barge_in=self.room.barge_in)
        try:
            await self._receive_loop()
            await self._drain(1000, "room closed" if self.room_closed else "bye")
        except Close as close:
            log.info("room %s: audio socket closed %d (%s)", self.room.id, close.code, close.message)
            self.emit("error", code=close.error, message=close.message)
            await self._drain(close.code, close.message)
        except WebSocketDisconnect:
            pass
        finally:
            feed.cancel()
            sender.cancel()

    def emit(self, event: str, **fields) -> None:
        self.out.put_nowait(json.dumps({"event": event, "speaker": "user", "t": time.time(), **fields},
                                       ensure_ascii=False))

    async def _send_loop(self) -> None:
        while True:
            text = await self.out.get()
            await self.ws.send_text(text)

    async def _drain(self, code: int, reason: str) -> None:
        """Send what is queued (the last events, the error), then close."""
        for _ in range(100):
            if self.out.empty():
                break
            await asyncio.sleep(0.01)
        try:
            await self.ws.close(code=code, reason=reason[:120])
        except RuntimeError:
            pass  # already closed by the client

    async def _feed(self) -> None:
        async def send(text: str) -> None:
            if self.out.qsize() < FEED_BACKLOG:  # a client that does not read loses feed events, not memory
                self.out.put_nowait(text)
        try:
            await follow_feed(send, self.ws.app.state.feeds, self.store, self.room.id, None)
        except Exception:  # Redis gone: the socket cannot tell the room's state any more
            log.exception("room %s: the audio socket lost the room's feed", self.room.id)
            self.feed_lost = True
            return
        self.room_closed = True

    # ---- input ----
    async def _receive_loop(self) -> None:
        renewed = time.monotonic()
        while not self.room_closed:
            if self.feed_lost:
                raise Close(1011, "feed_lost", "the room's state cannot be read; reconnect")
            streaming = self.stream_start is not None
            wait = self.settings.voice_idle_timeout_s if streaming else 1.0
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=min(wait, 1.0))
            except asyncio.TimeoutError:
                if streaming and time.monotonic() - self.last_frame > self.settings.voice_idle_timeout_s:
                    await self._idle()
                message = None
            if time.monotonic() - renewed > self.settings.voice_speaker_ttl_s / 3:
                await run_in_threadpool(self.store.renew_speaker, self.room.id, self.token)
                renewed = time.monotonic()
            if message is None:
                continue
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                await self._audio(message["bytes"])
            elif message.get("text") is not None:
                await self._control(message["text"])

    async def _idle(self) -> None:
        if self.endpointer.in_speech:  # what was said still becomes a message
            await self._endpoint(self.endpointer.end("idle"))
        if self.finishing is not None:
            await asyncio.wait([self.finishing])
        raise Close(4408, "idle_timeout", f"no audio for {self.settings.voice_idle_timeout_s:g} s and no "
                    "{\"type\": \"end\"}; send audio continuously or end the utterance")

    async def _audio(self, data: bytes) -> None:
        if not MIN_FRAME <= len(data) <= MAX_FRAME or len(data) % 2:
            raise Close(4400, "bad_frame", f"a binary frame of {len(data)} bytes: frames are PCM s16le mono 16 kHz, "
                        f"20-100 ms ({MIN_FRAME}-{MAX_FRAME} bytes, even)")
        now = time.monotonic()
        if self.stream_start is None:
            self.stream_start, self.received_s = now, 0.0
        self.last_frame = now
        self.received_s += len(data) / 2 / RATE
        allowed = self.settings.voice_max_speed * (now - self.stream_start) + self.settings.voice_burst_s
        if self.received_s > allowed:
            raise Close(4429, "too_fast", f"audio arrives faster than {self.settings.voice_max_speed:g}x real time; "
                        "send it at the pace it is spoken")
        pcm = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        for kind, fields in self.endpointer.push(pcm):
            await self._on(kind, fields)
        self._maybe_partial()

    async def _control(self, text: str) -> None:
        try:
            control = json.loads(text)
            kind = control["type"]
        except (ValueError, KeyError, TypeError):
            raise Close(4400, "bad_control", "a text frame must be JSON: {\"type\": \"end\"} or "
                        "{\"type\": \"config\", \"language\": \"zh\"|\"en\"}") from None
        if kind == "end":
            self.stream_start = None  # a pause between streams is no idle client
            if self.endpointer.in_speech:
                await self._endpoint(self.endpointer.end("end"))
        elif kind == "config" and control.get("language") in LANGUAGES:
            self.language = control["language"]
        else:
            raise Close(4400, "bad_control", f"unknown control {text[:80]!r}: {{\"type\": \"end\"}} or "
                        "{\"type\": \"config\", \"language\": \"zh\"|\"en\"}")

    # ---- what the endpointer saw ----
    async def _on(self, kind: str, fields: dict) -> None:
        if kind == "speech_start":
            self.utterance += 1
            self._drop_early()
            self.partial_at, self.decodes = 0, {}
            self.emit("speech_start", utterance=self.utterance, **fields)
            await self._barge_in()
            if self.settings.voice_context_bias:  # after the barge-in: it must not wait for this read
                self.context = await run_in_threadpool(recognition_context, self.store.r, self.settings, self.room,
                                                       self.language)
        elif kind == "pause":
            # Recognised now: if the pause becomes the endpoint, this is the final text already. A partial
            # begun when this silence did covers the same speech: it is that text (no second decode
            # competing with it for the CPU, and the text is ready sooner).
            samples = self.endpointer.voiced_end
            last = self.silence_partial
            reuse = last if last and last[:2] == (self.utterance, samples) and not last[2].cancelled() else None
            self.early = (self.utterance, samples, reuse[2] if reuse else
                          recognise(self.settings, self.endpointer.speech(), self.language, self.context))
            self.early_from_partial = reuse is not None
            self._count("reused" if reuse else "pause")
            if self._may_preempt():
                self.preempt = (self.utterance, samples, asyncio.ensure_future(self._preempt(*self.early)))
        elif kind == "resume":
            self._drop_early()
        elif kind == "speech_end":
            await self._endpoint((kind, fields))

    def _drop_early(self) -> None:
        """Speech went on after a pause: its early decode is no final (and need not run if still queued),
        and a turn posted at the pause is taken back (in order, before the utterance's own final)."""
        if self.early is not None:
            self.early[2].cancel()
        self.early = None
        if self.preempt is not None:
            self.finishing = asyncio.ensure_future(self._retract(self.finishing, self.preempt[2]))
            self.preempt = None

    # ---- a reply prepared during the pause ----
    def _may_preempt(self) -> bool:
        return (self.settings.voice_preemptive_reply and self.room.barge_in and not self.room.keep_recordings
                and (self.finishing is None or self.finishing.done()))

    async def _preempt(self, utterance: int, samples: int, decode: asyncio.Future) -> dict | None:
        """At a pause: once its text is known, and while the speaker is still silent, post the turn with
        the room held, so the reply is generated and synthesised while the silence lasts. Returns
        {"message", "token"}, or None when nothing was posted."""
        def still_paused() -> bool:
            return self.early is not None and self.early[:2] == (utterance, samples)
        try:
            text = (await decode).text.strip()[:self.settings.max_message_chars]
        except (Exception, asyncio.CancelledError):  # the decode was dropped (speech resumed) or failed
            return None
        if not text or not still_paused():
            return None
        token = uuid.uuid4().hex
        await run_in_threadpool(self.store.hold, self.room.id, token, self.settings.voice_end_silence_ms + 1500)
        try:
            message = await run_in_threadpool(post_message, self.store.r, self.settings, self.room, text,
                                              owner=self.owner, source="voice")
        except (DomainError, Refused):
            await run_in_threadpool(self.store.release_hold, self.room.id, token)
            return None
        return {"message": message, "token": token}

    async def _retract(self, previous: asyncio.Future | None, posting: asyncio.Future) -> None:
        """Speech resumed: the turn posted at the pause is stopped and leaves the history."""
        if previous is not None:
            await asyncio.wait([previous])
        posted = await _outcome(posting)
        if posted is None:
            return
        message_id = posted["message"].id
        await run_in_threadpool(self.store.barge_in, self.room.id, "voice")  # its turn stops generating
        await run_in_threadpool(ConversationStore(self.store.r, self.settings).retract, self.room.id, message_id)
        await run_in_threadpool(self.store.event, self.room.id, "message_retracted", True, message=message_id)
        await run_in_threadpool(self.store.release_hold, self.room.id, posted["token"])
        self.emit("retracted", message_id=message_id)

    async def _barge_in(self) -> None:
        """Speech while the room speaks stops it (the same interrupt as a new message)."""
        if not self.room.barge_in:
            return
        pending, held = await run_in_threadpool(self.store.queue_state, self.room.id)
        if pending or held:
            await run_in_threadpool(self.store.barge_in, self.room.id, "voice")
            self.emit("barge_in", utterance=self.utterance)

    def _maybe_partial(self) -> None:
        """A partial transcript every `voice_partial_interval_s` of new speech, and one as soon as
        silence begins: the utterance may be ending there, and if no voiced audio follows, the pause
        takes that decode as its text instead of decoding the same speech again (two decodes of it at
        once each ran up to 2-4x slower on the two cores)."""
        ep = self.endpointer
        if not ep.in_speech or ep.paused:
            return
        silence = 0 < ep.silent_run < ep.pause_windows  # a frame may carry two VAD windows
        if silence:
            self._silence_partial()
            return
        if ep.silent_run:
            return
        self._drop_silence_partial()
        if not self.partials_queued and ep.utterance_samples - self.partial_at >= \
                int(self.settings.voice_partial_interval_s * RATE):
            self._partial(quick=True)

    def _silence_partial(self) -> None:
        """Silence began: decode what was said up to it, as a final is decoded, whenever the last
        partial was begun (a silence that reaches the pause needs this decode anyway; begun now, not
        at the pause, the text is ready 130 ms sooner). With a partial still decoding (under load one
        took up to 1 s), this one is queued behind it on the same thread rather than left to the
        pause, whose decode ran beside that partial on the other thread (both slower); voice
        returning before it starts takes it off the queue."""
        ep = self.endpointer
        last = self.silence_partial
        if last and last[:2] == (self.utterance, ep.voiced_end) and not last[2].cancelled():
            return  # this silence's speech is being decoded already
        self._partial(quick=False)

    def _drop_silence_partial(self) -> None:
        """Voice again: a silence partial still waiting for the thread is no use any more."""
        last = self.silence_partial
        if last and (last[0] != self.utterance or last[1] != self.endpointer.voiced_end):
            unqueue(last[2])  # one that has begun runs on: its text is shown as a partial
            self.silence_partial = None

    def _partial(self, quick: bool) -> None:
        """One decode on the partials' thread: `quick` only shown; otherwise begun in silence, it may
        become the final text (decoded as a final is)."""
        ep = self.endpointer
        self.partials_queued += 1
        self.partial_at = ep.utterance_samples
        future = recognise(self.settings, ep.speech(), self.language, self.context, partial=True, quick=quick)
        utterance = self.utterance
        if not quick:
            self.silence_partial = (utterance, ep.voiced_end, future)
        self._count("partial" if quick else "silence_partial")

        def done(f: asyncio.Future) -> None:
            self.partials_queued -= 1
            if f.cancelled() or f.exception() is not None:
                return
            if utterance == self.utterance and ep.in_speech and f.result().text:
                self.emit("partial", utterance=utterance, text=f.result().text)
        future.add_done_callback(done)

    async def _endpoint(self, end: tuple[str, dict]) -> None:
        """The utterance ended: its final text is made and posted on a task of its own (so audio keeps
        being read and a next utterance can barge in), after the previous utterance's, in order."""
        _kind, fields = end
        utterance, speech = self.utterance, self.endpointer.speech()
        self.emit("speech_end", utterance=utterance, **fields)
        early = self.early if self.early and self.early[:2] == (utterance, self.endpointer.voiced_end) else None
        posting = self.preempt[2] if early and self.preempt and self.preempt[:2] == early[:2] else None
        self.early = self.preempt = None
        self.endpointer.reset_utterance()
        if not early:
            self._count("endpoint")
        decode = early[2] if early else recognise(self.settings, speech, self.language, self.context)
        kept = speech if self.room.keep_recordings else None
        how = ("partial" if self.early_from_partial else "pause") if early else None
        self.finishing = asyncio.ensure_future(self._finish(self.finishing, utterance, decode, how, kept, posting,
                                                            dict(self.decodes)))

    def _count(self, kind: str) -> None:
        self.decodes[kind] = self.decodes.get(kind, 0) + 1

    def _keep(self, speech: np.ndarray) -> str:
        """The utterance as a WAV under uploads/ (keep_recordings rooms only), owned by the speaker's key."""
        name = f"voice-{self.room.id[:12]}-{uuid.uuid4().hex}.wav"
        ref = f"uploads/{name}"
        write_wav(self.settings.kind_dir("uploads") / name, speech, RATE)
        FileOwners(self.store.r).claim(ref, self.owner)
        return ref

    async def _finish(self, previous: asyncio.Future | None, utterance: int, decode: asyncio.Future,
                      early: str | None, kept: np.ndarray | None = None, posting: asyncio.Future | None = None,
                      decodes: dict | None = None) -> None:
        """The final text (from the pause's early decode when nothing was said since), then the
        message that the room answers: posted at the pause already (`posting`; its reply is released
        now), or now."""
        ended = time.monotonic()
        if previous is not None:
            await asyncio.wait([previous])  # in order; its own failure is its own
        try:
            result = await decode
        except Exception:
            log.exception("room %s: recognising utterance %d failed", self.room.id, utterance)
            self.emit("final", utterance=utterance, text="", ignored="asr_failed")
            return
        final = {"utterance": utterance, "text": result.text, "language": result.language, "audio_s": result.audio_s,
                 "recognise_s": result.seconds, "after_endpoint_s": round(time.monotonic() - ended, 3),
                 "early": early is not None, "early_from": early, "decodes": decodes or {}}
        recording = await run_in_threadpool(self._keep, kept) if kept is not None and kept.size else None
        if recording:
            final["recording"] = recording
        if not result.text.strip():
            self.emit("final", **final, ignored="no_speech")
            return
        posted = await _outcome(posting) if posting is not None else None
        if posted is not None:  # the endpoint confirms the pause: the reply prepared since plays now
            await run_in_threadpool(self.store.release_hold, self.room.id, posted["token"])
            self.emit("final", **final, message_id=posted["message"].id, turn=posted["message"].turn,
                      preempted=True)
            return
        try:
            text = result.text.strip()[:self.settings.max_message_chars]
            message = await run_in_threadpool(post_message, self.store.r, self.settings, self.room, text,
                                              owner=self.owner, source="voice", recording=recording)
        except (DomainError, Refused) as exc:
            self.emit("final", **final, ignored=exc.code, message=str(exc))
            return
        self.emit("final", **final, message_id=message.id, turn=message.turn)
