"""Live rooms in Redis: identity, liveness, the FIFO of utterances, interrupts and publisher leases.

Keys (all under ``mtl:room:<id>``, built by core/keys.py):
    <id>             hash: id, zbjname, username, stream_key, avatar_id, ttl_s, persistent, created_at
    <id>:alive       present while the room is live; TTL = ttl_s, refreshed by activity (absent TTL: forever)
    <id>:utterances  list of JSON utterances, played in order
    <id>:playing     the utterance being played: moved here atomically from :utterances and removed
                     only when it finished, failed or was interrupted, so a new owner replays it
    <id>:gen         interrupt generation; bumping it stops the current utterance
    <id>:lease       the stream worker publishing the room (short TTL, renewed while it publishes)
    <id>:fence       fencing token, incremented at every lease acquisition; a publisher holding an
                     older one stops before its next frame
    <id>:owner       who made the room: a hash of the API key (api/access.py), absent when unowned
    <id>:events      capped list of JSON events from the publisher (speech start/end, interrupts, sessions)
    <id>:feed        Redis Stream of everything a front-end follows, in order: the same events plus the
                     conversation's (user text, reply text, mouth values); read by the WebSocket
    <id>:turn        conversation turn counter; a new message or an interrupt bumps it, which stops
                     the reply being generated (core/conversations)
    <id>:messages    list of message ids, oldest first; <id>:msg hash id -> JSON message;
    <id>:said        hash "<message id>:<sentence>" -> JSON status set by the publisher; all three
                     outlive the room by conversation_retention_s (with <id>:owner)
    <id>:script      how many scripted questions the room has asked
    <id>:material    JSON: the operator's products, Q/A pairs and shop answers (the `faq` responder)
    <id>:dark-noted  a no_publisher event was recorded lately (SET NX, expires)
    <id>:speaker     the one live audio input (WS .../audio) of the room: a token, short TTL, renewed
``mtl:rooms`` is the set of room ids; ``mtl:room-name:<zbjname>`` maps a legacy name to its id and
``mtl:room-stream:<stream key>`` a stream key to it.

A room's id, its zbjname and its stream key are three separate random values: the id is what the
API's callers (with the room owner's key) name it by, the stream key what its audience plays. Knowing
one gives neither of the others, so a room id seen in a log or a URL never lets anyone watch it, and a
play URL never names the room to the API.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from enum import Enum

from redis import Redis
from redis.exceptions import LockError, RedisError

from core import keys
from core.credentials import STREAM_KEY
from core.limits import Refused, Shortage, open_rooms_cap
from core.settings import Settings

ROOMS = keys.ROOMS
ROOM_ID = re.compile(r"^[0-9a-f]{32}$")
USERNAME = re.compile(r"^[A-Za-z0-9_.\-\u4e00-\u9fff]{1,64}$")


# Push an utterance unless the room's queue holds `cap` (0 returned); with a turn (ARGV[3] not
# empty), only while the conversation turn is still that one (-1: superseded), so a reply sentence
# cut after a barge-in is never queued behind the interrupt. One script: no request interleaves.
_PUSH = """
if ARGV[3] ~= '' and tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[3]) then return -1 end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'say')
return n
"""


# A claim is renewed or released only by its holder (a claim that expired and was taken over stays).
_RENEW_IF_MINE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"
_DELETE_IF_MINE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


_k = room_key = keys.room  # room_key: for the conversation store, which shares the room's key space
FEED_MAXLEN = 2000  # entries kept in a room's feed (about a minute of speech with mouth values)
RETAINED = ("messages", "msg", "said", "owner")  # kept after close for conversation_retention_s


class RoomState(str, Enum):
    """A room as its operators see it (the API's `state`)."""

    IDLE = "idle"  # on air, silent
    SPEAKING = "speaking"
    DARK = "dark"  # open, but its stream is not on air (`dark_reason` says why)


class AudienceState(str, Enum):
    """A room as its audience page sees it (GET /live/<stream key>/state)."""

    LIVE = "live"
    SPEAKING = "speaking"
    OFFLINE = "offline"  # closed, or not on air


class UtteranceStatus(str, Enum):
    """What the publisher reports of an utterance that is a reply's sentence: queued -> speaking ->
    spoken | cut (interrupted while spoken) | failed; a queued one of a superseded turn reads as
    dropped (it will never play)."""

    QUEUED = "queued"
    SPEAKING = "speaking"
    SPOKEN = "spoken"
    CUT = "cut"
    DROPPED = "dropped"
    FAILED = "failed"


@dataclass(frozen=True)
class Utterance:
    """One thing a room says, in order. Serialised by RoomStore alone (JSON in the room's lists);
    the stored form is the same object as before these were typed, so queued ones survive an upgrade."""

    id: str
    queued_at: float
    audio: str | None = None  # a file the service owns (`<kind>/<name>`); None: its TTS job's output
    duration_s: float | None = None
    tts_job_id: str | None = None  # the job synthesising it (when `audio` is None)
    message_id: str | None = None  # a conversation reply's sentence: the reply ...
    sentence: int | None = None  # ... and which of its sentences
    clip: str | None = None  # a pre-rendered clip of it (interviews): its video, played as rendered
    clip_source: str | None = None  # "question" or "stock"
    clip_index: int | None = None
    clip_cycle_start: int | None = None  # the avatar cycle frame the clip's render began at
    clip_cycle_end: int | None = None

    def dumps(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def loads(cls, raw: bytes | str) -> Utterance:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in _UTTERANCE_FIELDS})


_UTTERANCE_FIELDS = {f.name for f in fields(Utterance)}


@dataclass(frozen=True)
class Room:
    id: str
    zbjname: str
    username: str
    stream_key: str
    avatar_id: str
    ttl_s: int
    persistent: bool
    created_at: float
    language: str = "zh"
    responder: str | None = None  # None: the settings' conversation_responder
    system_prompt: str | None = None
    llm_model: str | None = None
    job: str | None = None  # the position the script responder asks questions for
    barge_in: bool = True  # speech heard on the room's audio input interrupts what the room says
    keep_recordings: bool = False  # utterances heard on the audio input are kept as WAVs (uploads/); else never on disk

    def urls(self, settings: Settings) -> dict[str, str]:
        fields = {"stream_key": self.stream_key, "rtmp_port": settings.rtmp_port,
                  "media_http_port": settings.media_http_port, "media_host": settings.media_public_host,
                  "api_base": settings.api_base}
        urls = {"publish": settings.publish_url_template.format(**fields)}
        for name, template in settings.play_url_templates.items():
            urls[name] = template.format(**fields)
        return urls


class RoomError(ValueError):
    pass


class RoomStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.r = redis
        self.settings = settings

    # ---- identity ----
    def create(self, username: str | None = None, avatar_id: str | None = None, ttl_s: int | None = None,
               persistent: bool = False, zbjname: str | None = None, owner: str | None = None,
               **conversation) -> Room:
        """`conversation`: the Room fields language, responder, system_prompt, llm_model, job."""
        username = username or self.settings.default_username
        if not USERNAME.match(username):
            raise RoomError("username may use letters, digits, Chinese characters, '_', '.', '-' (max 64)")
        room_id = uuid.uuid4().hex
        room = Room(
            id=room_id,
            # Legacy shape `<username>*<uuid4>`, with a uuid of its own (not the room id's).
            zbjname=zbjname or f"{username}*{uuid.uuid4()}",
            username=username,
            # The zbjname holds '*', which is not safe in a stream URL: the key is found by lookup.
            stream_key=new_stream_key(),
            avatar_id=avatar_id or self.settings.demo_avatar_id,
            ttl_s=int(ttl_s or self.settings.room_ttl_s),
            persistent=persistent,
            created_at=time.time(),
            **{k: v for k, v in conversation.items() if v is not None},
        )
        data = {k: json.dumps(v) for k, v in asdict(room).items()}
        with self.r.pipeline() as p:
            p.hset(_k(room_id), mapping=data)
            p.sadd(ROOMS, room_id)
            p.set(keys.room_name(room.zbjname), room_id)
            p.set(keys.room_stream(room.stream_key), room_id)
            p.set(_k(room_id, "alive"), "1", **({} if persistent else {"ex": room.ttl_s}))
            if owner:
                p.set(_k(room_id, "owner"), owner)
            p.execute()
        self._within_cap(room_id)
        self.event(room_id, "created")
        return room

    def open_count(self) -> int:
        ids = list(self.r.smembers(ROOMS))
        if not ids:
            return 0
        with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.exists(_k(i.decode(), "alive"))
            return sum(1 for alive in p.execute() if alive)

    def _within_cap(self, room_id: str) -> None:
        """Counted after the room was added, so rooms opened at the same moment cannot together
        pass the cap (at worst both are refused); a refused room is removed at once."""
        cap = open_rooms_cap(self.settings)
        count = self.open_count()
        if count > cap:
            self.close(room_id)
            raise Refused(Shortage.UNAVAILABLE, "too_many_rooms", f"{cap} rooms are open, as many as the stream "
                          "workers can publish; close one or retry later",
                          retry_after_s=self.settings.busy_retry_after_s, limit=cap)

    def get(self, room_id: str) -> Room | None:
        if not ROOM_ID.match(room_id or ""):
            return None
        raw = self.r.hgetall(_k(room_id))
        if not raw:
            return None
        known = Room.__dataclass_fields__
        return Room(**{k.decode(): json.loads(v) for k, v in raw.items() if k.decode() in known})

    def owner(self, room_id: str) -> str | None:
        raw = self.r.get(_k(room_id, "owner"))
        return raw.decode() if raw else None

    def by_name(self, zbjname: str) -> Room | None:
        room_id = self.r.get(keys.room_name(zbjname))
        return self.get(room_id.decode()) if room_id else None

    def by_stream_key(self, stream_key: str) -> Room | None:
        """The room its audience plays as `stream_key` (only through the lookup: no key is derived)."""
        if not STREAM_KEY.match(stream_key or ""):
            return None
        room_id = self.r.get(keys.room_stream(stream_key))
        return self.get(room_id.decode()) if room_id else None

    def resolve(self, ref: str) -> Room | None:
        """A room by id, zbjname or stream key."""
        return self.get(ref) or self.by_name(ref) or self.by_stream_key(ref)

    def ensure_default(self) -> Room:
        """The room used when legacy calls give no zbjname; it never expires (configurable)."""
        room = self.by_name(self.settings.default_room)
        # A default room made before rooms had stream keys of their own has no stream lookup: remade.
        if room is not None and self.is_open(room.id) and self.by_stream_key(room.stream_key) is not None:
            return room
        if room is not None:
            self.close(room.id)
        return self.create(username=self.settings.default_username, zbjname=self.settings.default_room,
                           persistent=self.settings.default_room_persistent)

    def list(self) -> list[Room]:
        rooms = [self.get(i.decode()) for i in self.r.smembers(ROOMS)]
        return sorted((r for r in rooms if r is not None), key=lambda r: r.created_at)

    # ---- liveness ----
    def is_open(self, room_id: str) -> bool:
        return bool(self.r.exists(_k(room_id, "alive")))

    def touch(self, room: Room) -> None:
        if not room.persistent:
            self.r.set(_k(room.id, "alive"), "1", ex=room.ttl_s)

    def close(self, room_id: str) -> bool:
        room = self.get(room_id)
        with self.r.pipeline() as p:
            p.delete(_k(room_id), _k(room_id, "alive"), _k(room_id, "utterances"), _k(room_id, "playing"),
                     _k(room_id, "gen"), _k(room_id, "fence"), _k(room_id, "events"), _k(room_id, "feed"),
                     _k(room_id, "turn"), _k(room_id, "script"), _k(room_id, "material"), _k(room_id, "speaker"),
                     _k(room_id, "hold"))
            # The transcript (and who may read it) outlives the room for a while.
            for suffix in RETAINED:
                p.expire(_k(room_id, suffix), self.settings.conversation_retention_s)
            p.srem(ROOMS, room_id)
            if room is not None:
                p.delete(keys.room_name(room.zbjname), keys.room_stream(room.stream_key))
            p.execute()
        return room is not None

    # ---- speech ----
    def say(self, room: Room, turn: int | None = None, **what) -> Utterance | None:
        """Queue an utterance (`what`: its Utterance fields, e.g. audio= and duration_s=, or
        tts_job_id=); with `turn`, only while that conversation turn is current (None if not)."""
        utterance = Utterance(id=uuid.uuid4().hex, queued_at=time.time(), **what)
        cap = self.settings.max_utterances_per_room
        pushed = self.r.eval(_PUSH, 2, _k(room.id, "utterances"), _k(room.id, "turn"), utterance.dumps(), cap,
                             "" if turn is None else turn, wake_channel(room.id))
        if pushed == 0:
            raise self._queue_full()
        if pushed == -1:
            return None
        self.touch(room)
        return utterance

    def check_room_queue(self, room: Room) -> None:
        """The room_queue_full refusal ahead of work an utterance needs first (its TTS job)."""
        if self.pending_count(room.id) >= self.settings.max_utterances_per_room:
            raise self._queue_full()

    def _queue_full(self) -> Refused:
        cap = self.settings.max_utterances_per_room
        return Refused(Shortage.BUSY, "room_queue_full", f"the room already has {cap} utterances waiting; retry "
                       "once it has spoken some", retry_after_s=self.settings.busy_retry_after_s, limit=cap)

    def pending(self, room_id: str) -> list[Utterance]:
        return [Utterance.loads(u) for u in self.r.lrange(_k(room_id, "utterances"), 0, -1)]

    def pending_count(self, room_id: str) -> int:
        return int(self.r.llen(_k(room_id, "utterances")))

    def queue_state(self, room_id: str) -> tuple[int, bool]:
        """(utterances waiting, whether one is taken: being played or waiting for its speech)."""
        with self.r.pipeline(transaction=False) as p:
            p.llen(_k(room_id, "utterances"))
            p.exists(_k(room_id, "playing"))
            pending, held = p.execute()
        return int(pending), bool(held)

    def take_utterance(self, room_id: str) -> Taken | None:
        """The next utterance to play: first whatever is still in the playing list (its publisher
        died or stopped mid-utterance, or it waits for its TTS), else the head of the queue, moved
        into the playing list atomically (LMOVE) so that a kill -9 cannot lose it."""
        if self.r.exists(_k(room_id, "hold")):
            return None  # a reply prepared ahead of the end of the speaker's turn waits for it
        raw = self.r.lindex(_k(room_id, "playing"), 0)
        if raw is not None:
            return Taken(raw, Utterance.loads(raw), from_playing=True)
        raw = self.r.lmove(_k(room_id, "utterances"), _k(room_id, "playing"), "LEFT", "RIGHT")
        return Taken(raw, Utterance.loads(raw), from_playing=False) if raw is not None else None

    def ack_utterance(self, room_id: str, taken: Taken) -> None:
        """The utterance finished, failed or was interrupted: it must not play again."""
        self.r.lrem(_k(room_id, "playing"), 1, taken.raw)

    def playing(self, room_id: str) -> list[Utterance]:
        return [Utterance.loads(u) for u in self.r.lrange(_k(room_id, "playing"), 0, -1)]

    def interrupt(self, room_id: str, reason: str = "request") -> int:
        """Stop what the room says and will say; returns the new interrupt generation."""
        return self.barge_in(room_id, reason)[0]

    def barge_in(self, room_id: str, reason: str = "request") -> tuple[int, int]:
        """As interrupt; returns (generation, turn), the turn being the new message's own."""
        # One transaction: the queue and the utterance being played go with the bump, so neither
        # the publisher nor a worker taking the room over can bring an interrupted one back; the
        # turn bump stops a reply still being generated (it would queue more sentences).
        with self.r.pipeline() as p:
            p.delete(_k(room_id, "utterances"), _k(room_id, "playing"))
            p.incr(_k(room_id, "gen"))
            p.incr(_k(room_id, "turn"))
            p.publish(wake_channel(room_id), "interrupt")  # the publisher stops at its next frame
            _, gen, turn, _ = p.execute()
        self.event(room_id, "interrupt_requested", gen=gen, turn=turn, reason=reason)
        return gen, turn

    def generation(self, room_id: str) -> int:
        return int(self.r.get(_k(room_id, "gen")) or 0)

    # ---- the speaker (live audio input) ----
    def claim_speaker(self, room_id: str, token: str) -> bool:
        """One audio input per room, across API processes; False when another holds it."""
        return bool(self.r.set(_k(room_id, "speaker"), token, nx=True, ex=self.settings.voice_speaker_ttl_s))

    def renew_speaker(self, room_id: str, token: str) -> bool:
        return bool(self.r.eval(_RENEW_IF_MINE, 1, _k(room_id, "speaker"), token, self.settings.voice_speaker_ttl_s))

    def release_speaker(self, room_id: str, token: str) -> None:
        self.r.eval(_DELETE_IF_MINE, 1, _k(room_id, "speaker"), token)

    def hold(self, room_id: str, token: str, ttl_ms: int) -> None:
        """Nothing new starts playing until release_hold (or `ttl_ms`, should its holder vanish): a
        reply generated while the speaker pauses is heard only once the pause is the end of the turn."""
        self.r.set(_k(room_id, "hold"), token, px=ttl_ms)

    def release_hold(self, room_id: str, token: str) -> None:
        if self.r.eval(_DELETE_IF_MINE, 1, _k(room_id, "hold"), token):
            wake_room(self.r, room_id, "released")

    def wake_messages(self, room_id: str, stopped: Callable[[], bool], poll_s: float = 0.5) -> Iterator[str]:
        """What the room's wake channel says (wake_room), as it comes, until `stopped()`. A lost
        connection raises RedisError; the subscription is closed either way."""
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(wake_channel(room_id))
            while not stopped():
                message = pubsub.get_message(timeout=poll_s)
                if message is not None:
                    data = message.get("data")
                    yield data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        finally:
            try:
                pubsub.close()
            except RedisError:
                pass

    # ---- events ----
    def event(self, room_id: str, kind: str, feed_only: bool = False, **fields) -> None:
        """Record an event in the room's event list and its feed (`feed_only`: the feed alone,
        for the high-rate mouth values and reply text a front-end follows)."""
        data = json.dumps({"event": kind, "t": time.time(), **fields}, ensure_ascii=False)
        with self.r.pipeline() as p:
            if not feed_only:
                p.rpush(_k(room_id, "events"), data)
                p.ltrim(_k(room_id, "events"), -200, -1)
            p.xadd(_k(room_id, "feed"), {"e": data}, maxlen=FEED_MAXLEN, approximate=True)
            # A publisher may still report (session_end) after its room was closed and its keys
            # deleted: what it writes then must expire too.
            for suffix in (("feed",) if feed_only else ("events", "feed")):
                p.expire(_k(room_id, suffix), self.settings.conversation_retention_s)
            p.execute()

    def events(self, room_id: str, last: int | None = None) -> list[dict]:
        """The room's events, oldest first (`last`: only the newest so many)."""
        return [json.loads(e) for e in self.r.lrange(_k(room_id, "events"), -last if last else 0, -1)]

    def publisher(self, room_id: str) -> str | None:
        """The stream worker holding the room's lease, if any."""
        raw = self.r.get(lease_key(room_id))
        return raw.decode() if raw else None


# ---- the same reads for the API's event loop (redis.asyncio) ----

async def is_open_async(aredis, room_id: str) -> bool:
    return bool(await aredis.exists(_k(room_id, "alive")))


async def stream_is_open_async(aredis, stream_key: str) -> bool:
    """Whether the room played as `stream_key` is open (False once it is closed or expired)."""
    room_id = await aredis.get(keys.room_stream(stream_key))
    return room_id is not None and await is_open_async(aredis, room_id.decode())


def new_stream_key() -> str:
    """A room's stream key: 128 random bits, unrelated to its id (`zbj-` + 32 hex, URL-safe)."""
    return f"zbj-{secrets.token_hex(16)}"


async def feed_latest(aredis, room_id: str) -> str:
    """The id of the room feed's newest entry ("0-0": empty), where a new follower starts."""
    newest = await aredis.xrevrange(_k(room_id, "feed"), count=1)
    return newest[0][0].decode() if newest else "0-0"


async def feed_read(aredis, room_id: str, since: str, block_ms: int = 1000, count: int = 500) -> list[tuple[str, dict]]:
    """(entry id, event) of the feed after `since`, waiting up to `block_ms` for the first."""
    entries = await aredis.xread({_k(room_id, "feed"): since}, block=block_ms, count=count)
    return [(entry_id.decode(), json.loads(fields[b"e"])) for _key, items in entries or [] for entry_id, fields in items]


@dataclass(frozen=True)
class Taken:
    raw: bytes  # the exact list element, so the acknowledgement removes this one and no other
    utterance: Utterance
    from_playing: bool


SPEECH_ON, SPEECH_OFF = {"speech_start"}, {"speech_end", "interrupted", "session_end", "session_error", "expired"}
SESSION_ON, SESSION_OFF = {"session_start"}, {"session_end", "session_error", "expired"}


def latest_is(events: list[dict], on: set[str], off: set[str]) -> bool:
    """Whether the most recent of the `on`/`off` events is an `on` one (False when neither occurs)."""
    for event in reversed(events):
        if event.get("event") in on:
            return True
        if event.get("event") in off:
            return False
    return False


def wake_channel(room_id: str) -> str:
    """Pub/sub channel that wakes the room's publisher (workers/stream.py) when its speech changes:
    an utterance queued or its speech synthesised, an interrupt."""
    return _k(room_id, "wake")


def wake_room(redis: Redis, room_id: str, what: str = "speech") -> None:
    redis.publish(wake_channel(room_id), what)


def lease_key(room_id: str) -> str:
    return _k(room_id, "lease")


def fence_token(redis: Redis, room_id: str) -> int | None:
    raw = redis.get(_k(room_id, "fence"))
    return int(raw) if raw is not None else None


class RoomLease:
    """A stream worker's hold on one room.

    The hold is redis-py's Lock (SET NX PX; renewal and release check the token in Lua), with
    the worker's name as the token so the API can show who publishes. A lock alone cannot stop a
    publisher that outlived its lease (a stalled process, a lost renewal), so every acquisition
    also takes a fencing token from a counter, which publishers compare with the current one.
    """

    def __init__(self, redis: Redis, room_id: str, worker: str, lease_s: float) -> None:
        self.redis = redis
        self.room_id = room_id
        self.worker = worker
        self.lock = redis.lock(lease_key(room_id), timeout=lease_s, blocking=False, thread_local=False)
        self.token: int | None = None

    def acquire(self) -> bool:
        if not self.lock.acquire(token=self.worker):
            return False
        self.token = int(self.redis.incr(_k(self.room_id, "fence")))
        return True

    def renew(self) -> bool:
        try:
            return bool(self.lock.reacquire())
        except LockError:
            return False

    def release(self) -> None:
        try:
            self.lock.release()
        except LockError:  # expired or taken over meanwhile: nothing of ours to release
            pass


def note_no_publisher(store: "RoomStore", room: Room, reason: str, every_s: int = 60) -> bool:
    """Record a `no_publisher` event for a room nobody publishes (at most once a minute per room)."""
    if not store.r.set(_k(room.id, "dark-noted"), reason, nx=True, ex=every_s):
        return False
    store.event(room.id, "no_publisher", reason=reason)
    return True


def dark_reason(store: "RoomStore", room: Room, publisher: bool, events: list[dict]) -> str:
    """Why an open room is not on air: `starting` (within room_publisher_grace_s of opening),
    `reconnecting` (its publisher is between RTMP sessions), `avatar_error`, `no_stream_worker`,
    `stream_capacity_full` (every live stream worker publishes stream_capacity rooms) or `no_publisher`."""
    if publisher:
        return "reconnecting"
    if time.time() - room.created_at < store.settings.room_publisher_grace_s:
        return "starting"
    if any(e.get("event") == "avatar_error" for e in events[-10:]):
        return "avatar_error"
    loads = stream_worker_loads(store.r)
    if not loads:
        return "no_stream_worker"
    if all(load >= store.settings.stream_capacity for load in loads.values()):
        return "stream_capacity_full"
    return "no_publisher"


def note_stream_worker(redis: Redis, process: str, load: int, ttl_ms: int) -> None:
    """A stream worker's heartbeat: it is alive and publishes `load` rooms (expires unless renewed)."""
    redis.set(keys.stream_worker(process), load, px=ttl_ms)


def forget_stream_worker(redis: Redis, process: str) -> None:
    redis.delete(keys.stream_worker(process))


def is_leased(redis: Redis, room_id: str) -> bool:
    """Whether some stream worker holds the room's lease."""
    return bool(redis.exists(lease_key(room_id)))


def stream_worker_loads(redis: Redis) -> dict[str, int]:
    """Live stream worker processes and how many rooms each publishes."""
    prefix = keys.stream_worker("")
    loads = {}
    for key in redis.scan_iter(keys.stream_worker("*")):
        value = redis.get(key)
        if value is not None:
            loads[key.decode()[len(prefix):]] = int(value)
    return loads
