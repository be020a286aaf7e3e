"""Live rooms in Redis: identity, liveness, the FIFO of utterances, interrupts and publisher leases.

Keys (all under ``mtl:room:<id>``):
    <id>             hash: id, zbjname, username, stream_key, avatar_id, ttl_s, persistent, created_at
    <id>:alive       present while the room is live; TTL = ttl_s, refreshed by activity (absent TTL: forever)
    <id>:utterances  list of JSON utterances, played in order
    <id>:gen         interrupt generation; bumping it stops the current utterance
    <id>:lease       the stream worker publishing the room (short TTL, renewed while it publishes)
    <id>:events      capped list of JSON events from the publisher (speech start/end, interrupts, sessions)
``mtl:rooms`` is the set of room ids; ``mtl:room-name:<zbjname>`` maps a legacy name to its id.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass

from redis import Redis

from core.settings import Settings

ROOMS = "mtl:rooms"
STREAM_ALIVE_KEY = "mtl:stream-worker:{}"  # per stream worker process; value = rooms it publishes
NAME_KEY = "mtl:room-name:{}"
ROOM_ID = re.compile(r"^[0-9a-f]{32}$")
USERNAME = re.compile(r"^[A-Za-z0-9_.\-\u4e00-\u9fff]{1,64}$")


def _k(room_id: str, suffix: str = "") -> str:
    return f"mtl:room:{room_id}" + (f":{suffix}" if suffix else "")


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

    def urls(self, settings: Settings) -> dict[str, str]:
        fields = {"stream_key": self.stream_key, "rtmp_port": settings.rtmp_port,
                  "media_http_port": settings.media_http_port, "media_host": settings.media_public_host}
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
               persistent: bool = False, zbjname: str | None = None) -> Room:
        username = username or self.settings.default_username
        if not USERNAME.match(username):
            raise RoomError("username may use letters, digits, Chinese characters, '_', '.', '-' (max 64)")
        room_id = uuid.uuid4().hex
        room = Room(
            id=room_id,
            zbjname=zbjname or f"{username}*{uuid.UUID(room_id)}",
            username=username,
            # The zbjname holds '*', which is not safe in a stream URL: the key is derived by lookup.
            stream_key=f"zbj-{room_id}",
            avatar_id=avatar_id or self.settings.demo_avatar_id,
            ttl_s=int(ttl_s or self.settings.room_ttl_s),
            persistent=persistent,
            created_at=time.time(),
        )
        data = {k: json.dumps(v) for k, v in asdict(room).items()}
        with self.r.pipeline() as p:
            p.hset(_k(room_id), mapping=data)
            p.sadd(ROOMS, room_id)
            p.set(NAME_KEY.format(room.zbjname), room_id)
            p.set(_k(room_id, "alive"), "1", **({} if persistent else {"ex": room.ttl_s}))
            p.execute()
        self.event(room_id, "created")
        return room

    def get(self, room_id: str) -> Room | None:
        if not ROOM_ID.match(room_id or ""):
            return None
        raw = self.r.hgetall(_k(room_id))
        if not raw:
            return None
        return Room(**{k.decode(): json.loads(v) for k, v in raw.items()})

    def by_name(self, zbjname: str) -> Room | None:
        room_id = self.r.get(NAME_KEY.format(zbjname))
        return self.get(room_id.decode()) if room_id else None

    def resolve(self, ref: str) -> Room | None:
        """A room by id, zbjname or stream key."""
        if ref.startswith("zbj-"):
            ref = ref[4:]
        return self.get(ref) or self.by_name(ref)

    def ensure_default(self) -> Room:
        """The room used when legacy calls give no zbjname; it never expires (configurable)."""
        room = self.by_name(self.settings.default_room)
        if room is not None and self.is_open(room.id):
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
            p.delete(_k(room_id), _k(room_id, "alive"), _k(room_id, "utterances"), _k(room_id, "gen"),
                     _k(room_id, "events"))
            p.srem(ROOMS, room_id)
            if room is not None:
                p.delete(NAME_KEY.format(room.zbjname))
            p.execute()
        return room is not None

    # ---- speech ----
    def say(self, room: Room, utterance: dict) -> dict:
        utterance = {"id": uuid.uuid4().hex, "queued_at": time.time(), **utterance}
        with self.r.pipeline() as p:
            p.rpush(_k(room.id, "utterances"), json.dumps(utterance))
            p.execute()
        self.touch(room)
        return utterance

    def pending(self, room_id: str) -> list[dict]:
        return [json.loads(u) for u in self.r.lrange(_k(room_id, "utterances"), 0, -1)]

    def pop_utterance(self, room_id: str) -> dict | None:
        raw = self.r.lpop(_k(room_id, "utterances"))
        return json.loads(raw) if raw else None

    def requeue_front(self, room_id: str, utterance: dict) -> None:
        self.r.lpush(_k(room_id, "utterances"), json.dumps(utterance))

    def interrupt(self, room_id: str) -> int:
        with self.r.pipeline() as p:
            p.delete(_k(room_id, "utterances"))
            p.incr(_k(room_id, "gen"))
            gen = p.execute()[1]
        self.event(room_id, "interrupt_requested", gen=gen)
        return gen

    def generation(self, room_id: str) -> int:
        return int(self.r.get(_k(room_id, "gen")) or 0)

    # ---- events ----
    def event(self, room_id: str, kind: str, **fields) -> None:
        key = _k(room_id, "events")
        with self.r.pipeline() as p:
            p.rpush(key, json.dumps({"event": kind, "t": time.time(), **fields}))
            p.ltrim(key, -200, -1)
            p.execute()

    def events(self, room_id: str) -> list[dict]:
        return [json.loads(e) for e in self.r.lrange(_k(room_id, "events"), 0, -1)]


def lease_key(room_id: str) -> str:
    return _k(room_id, "lease")


def stream_worker_loads(redis: Redis) -> dict[str, int]:
    """Live stream worker processes and how many rooms each publishes."""
    prefix = STREAM_ALIVE_KEY.format("")
    loads = {}
    for key in redis.scan_iter(STREAM_ALIVE_KEY.format("*")):
        value = redis.get(key)
        if value is not None:
            loads[key.decode()[len(prefix):]] = int(value)
    return loads
