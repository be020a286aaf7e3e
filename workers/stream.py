"""Stream worker: one continuous RTMP publish per open room, many rooms per process.

`python -m workers stream` runs a supervisor that takes rooms through leases in Redis (a dead
worker's rooms are taken over by another within the lease time), starts one publisher thread per
room up to `stream_capacity`, closes rooms whose liveness expired and releases everything on
shutdown. Each publisher (`push_room_stream`) keeps its RTMP session alive across idle, speech
and interrupts, reconnecting with backoff when the media server goes away.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly
from redis import Redis

from avatars.idle_loop import IdleLoop, load_idle_loop
from avatars.store import Avatar
from core.files import NotOwnedError, resolve_owned
from core.jobs import redis_connection
from core.live import FPS, RtmpSession
from core.media import decode_audio
from core.rooms import STREAM_ALIVE_KEY, Room, RoomStore, lease_key, stream_worker_loads
from core.settings import Settings, get_settings
from models.lipsync.engines import live_engine
from models.lipsync.mouth import SAMPLE_RATE, analyse, frame_count

log = logging.getLogger(__name__)

POLL_EVERY = 5  # frames between Redis checks (200 ms)
LEAD_S = 0.15  # how far ahead of real time frames are sent
_RENEW = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"""
_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"""


@dataclass
class Speech:
    utterance: dict
    audio16: np.ndarray  # what drives the mouth
    pcm: np.ndarray  # mono float32 at the session audio rate, what viewers hear
    n: int
    track: object
    frames: object = None  # iterator of BGR frames, made when the speech starts
    k: int = 0


class RoomPublisher(threading.Thread):
    def __init__(self, room: Room, settings: Settings, redis: Redis, worker: str, loops: "IdleLoops") -> None:
        super().__init__(name=f"room-{room.id[:8]}", daemon=True)
        self.room = room
        self.settings = settings
        self.store = RoomStore(redis, settings)
        self.worker = worker
        self.loops = loops
        self.stop_event = threading.Event()
        self.closed_by_expiry = False
        self.engine = live_engine(settings)
        self.prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prep-{room.id[:8]}")
        self.cycle = 0  # position in the avatar's ping-pong cycle; continues across speech and idle

    def stop(self) -> None:
        self.stop_event.set()

    # ---- speech preparation (off the pacing loop) ----
    def _prepare(self, utterance: dict) -> Speech:
        pcm = decode_audio(resolve_owned(self.settings, utterance["audio"]), self.settings.live_audio_rate)
        # One decode: the mouth analysis runs on a 16 kHz resample of what viewers hear.
        rate = self.settings.live_audio_rate
        g = np.gcd(rate, SAMPLE_RATE)
        speech16 = resample_poly(pcm, SAMPLE_RATE // g, rate // g).astype(np.float32)
        n = max(1, frame_count(speech16.size, FPS))
        return Speech(utterance, speech16, pcm, n, analyse(speech16, FPS, n))

    def _next_utterance(self) -> dict | None:
        utterance = self.store.pop_utterance(self.room.id)
        if utterance is None:
            return None
        if utterance.get("audio"):
            return utterance
        tts_file = f"tts/{utterance['tts_job_id']}.wav"
        try:
            resolve_owned(self.settings, tts_file)
        except NotOwnedError:
            status = self.store.r.hget(f"rq:job:{utterance['tts_job_id']}", "status")
            if status in (b"failed", b"canceled", b"stopped", None):
                self.store.event(self.room.id, "utterance_dropped", utterance=utterance["id"], reason="tts failed")
                return None
            # Not synthesised yet: keep its place at the head of the queue.
            self.store.requeue_front(self.room.id, utterance)
            return None
        return {**utterance, "audio": tts_file}

    # ---- publishing ----
    def run(self) -> None:
        backoff = 0.5
        try:
            avatar = Avatar.open(self.settings.data_dir, self.room.avatar_id)
            self.loops.ensure(avatar)
        except Exception:
            log.exception("room %s: avatar %s unusable", self.room.id, self.room.avatar_id)
            self.store.event(self.room.id, "avatar_error", avatar=self.room.avatar_id)
            return
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self._session(avatar)
            except Exception as exc:
                log.warning("room %s: publish session ended: %s", self.room.id, exc)
                self.store.event(self.room.id, "session_error", error=str(exc)[:200])
            if self.stop_event.is_set() or self.closed_by_expiry:
                break
            backoff = 0.5 if time.monotonic() - started > 10 else min(2.0, backoff * 2)
            self.stop_event.wait(backoff)
        self.prep.shutdown(wait=False, cancel_futures=True)

    def _session(self, avatar: Avatar) -> None:
        url = self.settings.publish_url_template.format(stream_key=self.room.stream_key,
                                                        rtmp_port=self.settings.rtmp_port,
                                                        media_http_port=self.settings.media_http_port,
                                                        media_host=self.settings.media_public_host)
        self.engine.warm(avatar)  # an enrolled mouth is decoded now, not at the first word
        session = RtmpSession(url, self.settings, avatar.width, avatar.height)
        t0_wall, t0 = time.time(), time.monotonic()
        self.store.event(self.room.id, "session_start", t0=t0_wall, worker=self.worker)
        log.info("room %s: publishing to %s", self.room.id, url)
        per_frame = self.settings.live_audio_rate // FPS
        silence = np.zeros(per_frame, np.float32)
        gen = self.store.generation(self.room.id)
        speech: Speech | None = None
        pending: Future | None = None
        remux = False
        need_key = True
        f = 0
        try:
            while not self.stop_event.is_set():
                if f % POLL_EVERY == 0:
                    if not self.store.is_open(self.room.id):
                        self.closed_by_expiry = True
                        self.store.event(self.room.id, "expired", stream_ts=f / FPS)
                        return
                    current = self.store.generation(self.room.id)
                    if current != gen:
                        gen = current
                        if speech is not None or pending is not None:
                            self.store.event(self.room.id, "interrupted", stream_ts=f / FPS,
                                             utterance=(speech.utterance["id"] if speech else None))
                        speech, pending = None, None
                    if speech is None and pending is None:
                        utterance = self._next_utterance()
                        if utterance is not None:
                            pending = self.prep.submit(self._prepare, utterance)
                if pending is not None and pending.done():
                    try:
                        ready = pending.result()
                    except Exception as exc:
                        log.warning("room %s: utterance failed: %s", self.room.id, exc)
                        self.store.event(self.room.id, "utterance_failed", error=str(exc)[:200])
                        ready = None
                    pending = None
                    if ready is not None:
                        # Frames render lazily from the cycle position the speech begins at, so the
                        # avatar continues its motion instead of jumping.
                        ready.frames = self.engine.frames(avatar, ready.audio16, self.cycle, ready.n, ready.track)
                        speech = ready
                        self.store.event(self.room.id, "speech_start", stream_ts=f / FPS,
                                         utterance=speech.utterance["id"], frames=speech.n,
                                         engine=self.engine.choose(avatar).name,
                                         queued_at=speech.utterance.get("queued_at"))
                spoke = False
                if speech is not None:
                    frame = next(speech.frames, None)
                    if frame is None:
                        self.store.event(self.room.id, "speech_end", stream_ts=f / FPS, utterance=speech.utterance["id"])
                        speech = None
                    else:
                        session.encode_video(frame, f, keyframe=need_key)
                        need_key, remux = False, False
                        pcm = speech.pcm[speech.k * per_frame:(speech.k + 1) * per_frame]
                        session.push_audio(np.pad(pcm, (0, per_frame - pcm.size)))
                        speech.k += 1
                        spoke = True
                if not spoke:
                    # Until the avatar's idle loop is encoded (first use with these encoder
                    # settings), idle frames are encoded live like speech.
                    loop = self.loops.get(avatar.id)
                    p = self.cycle % len(loop) if loop is not None else 0
                    if not remux and loop is not None and loop.keyframes[p]:
                        remux = True
                    if remux:
                        session.mux_video_packet(loop.packets[p], f, bool(loop.keyframes[p]))
                        need_key = True
                    else:
                        session.encode_video(avatar.frame(self.cycle), f, keyframe=need_key)
                        need_key = False
                    session.push_audio(silence)
                self.cycle = (self.cycle + 1) % avatar.cycle_length
                f += 1
                delay = t0 + f / FPS - LEAD_S - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
        finally:
            session.close()
            self.store.event(self.room.id, "session_end", frames=f)


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


def push_room_stream(room: Room, settings: Settings, redis: Redis, worker: str, loops: IdleLoops) -> RoomPublisher:
    """Start publishing one room (the job of the stream worker kind); returns its running publisher."""
    publisher = RoomPublisher(room, settings, redis, worker, loops)
    publisher.start()
    return publisher


class StreamWorker:
    """Supervisor: leases rooms, runs their publishers, closes expired rooms."""

    def __init__(self, settings: Settings, name: str | None = None, tick_s: float = 0.5) -> None:
        self.settings = settings
        self.name = name or f"stream.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.redis = redis_connection(settings)
        self.store = RoomStore(self.redis, settings)
        self.tick_s = tick_s
        self.publishers: dict[str, RoomPublisher] = {}
        self.loops = IdleLoops(settings)
        self.stopping = threading.Event()
        self._deferred: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)

    @property
    def lease_ms(self) -> int:
        return int(self.settings.stream_lease_s * 1000)

    def tick(self) -> None:
        self.redis.set(STREAM_ALIVE_KEY.format(self.name), len(self.publishers), px=self.lease_ms)
        for room_id, pub in list(self.publishers.items()):
            if not pub.is_alive():
                # A publisher only ends by itself when its room cannot be served (e.g. a broken
                # avatar): retry later instead of spinning.
                self._retry_at[room_id] = time.monotonic() + 10.0
                self._drop(room_id, reason="publisher ended")
            elif not self._renew(keys=[lease_key(room_id)], args=[self.name, self.lease_ms]):
                self._drop(room_id, reason="lease lost")
        for room in self.store.list():
            if not self.store.is_open(room.id):
                # Any worker may close an expired room; its publisher (wherever it runs) sees it.
                self._drop(room.id, reason="expired")
                self.store.close(room.id)
                log.info("room %s closed after %d s without activity", room.id, room.ttl_s)
                continue
            if room.id in self.publishers or len(self.publishers) >= self.settings.stream_capacity:
                continue
            if self._retry_at.get(room.id, 0) > time.monotonic():
                continue
            if self.redis.exists(lease_key(room.id)):
                continue
            if not self._least_loaded() and room.id not in self._deferred:
                # Another live worker has fewer rooms: leave this one to it (it ticks too), so
                # rooms spread over processes and cores. Unowned rooms still go to anyone after a tick.
                self._deferred.add(room.id)
                continue
            self._deferred.discard(room.id)
            if self.redis.set(lease_key(room.id), self.name, nx=True, px=self.lease_ms):
                self.store.event(room.id, "leased", worker=self.name)
                self.publishers[room.id] = push_room_stream(room, self.settings, self.redis, self.name, self.loops)
                self.redis.set(STREAM_ALIVE_KEY.format(self.name), len(self.publishers), px=self.lease_ms)

    def _least_loaded(self) -> bool:
        mine = len(self.publishers)
        return all(load >= mine for name, load in stream_worker_loads(self.redis).items() if name != self.name)

    def _drop(self, room_id: str, reason: str) -> None:
        pub = self.publishers.pop(room_id, None)
        if pub is None:
            return
        log.info("room %s: stopping publisher (%s)", room_id, reason)
        pub.stop()
        pub.join(timeout=5)
        self._release(keys=[lease_key(room_id)], args=[self.name])

    def run(self) -> None:
        log.info("stream worker %s up (capacity %d rooms)", self.name, self.settings.stream_capacity)
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("stream supervisor tick failed; retrying")
            self.stopping.wait(self.tick_s)
        for room_id in list(self.publishers):
            self._drop(room_id, reason="shutdown")
        self.redis.delete(STREAM_ALIVE_KEY.format(self.name))


def main() -> int:
    from core.logs import setup_logging
    from workers.base import wait_for_redis

    settings = get_settings()
    setup_logging(settings.log_level)
    worker = StreamWorker(settings)
    wait_for_redis(worker.redis)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    worker.run()
    return 0
