"""Small records of the service in Redis, each behind its store (keys: core/keys.py).

* :class:`AvatarRegistry`: who owns each avatar and its latest preparation job (the avatar's files,
  under ``<data_dir>/avatars/<id>``, are the avatar itself: avatars/store.py).
* :class:`CyclePositions`: where an avatar's idle cycle stands for a room (or a client's label), so
  a room's next render continues where its previous one ended.
* worker heartbeats: a batch worker's short-lived flag that it is alive (core.jobs.alive_workers).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from core import keys


@dataclass(frozen=True)
class AvatarRecord:
    id: str
    owner: str | None  # a hash of the key that made it (api/access.py); None: shared
    job_id: str | None  # its latest preparation job, while that job's result is kept


class AvatarRegistry:
    def __init__(self, redis: Redis) -> None:
        self.r = redis

    def get(self, avatar_id: str) -> AvatarRecord:
        with self.r.pipeline(transaction=False) as p:
            p.hget(keys.AVATAR_OWNERS, avatar_id)
            p.get(keys.avatar_job(avatar_id))
            owner, job_id = p.execute()
        return AvatarRecord(avatar_id, owner.decode() if owner else None, job_id.decode() if job_id else None)

    def owner(self, avatar_id: str) -> str | None:
        raw = self.r.hget(keys.AVATAR_OWNERS, avatar_id)
        return raw.decode() if raw else None

    def owners(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(keys.AVATAR_OWNERS).items()}

    def claim(self, avatar_id: str, owner: str) -> None:
        """A new avatar is its creator's; a re-prepared one keeps its owner."""
        self.r.hsetnx(keys.AVATAR_OWNERS, avatar_id, owner)

    def note_job(self, avatar_id: str, job_id: str, ttl_s: int) -> None:
        self.r.set(keys.avatar_job(avatar_id), job_id, ex=ttl_s)

    def forget(self, avatar_id: str) -> bool:
        """Drop the avatar's records; whether it had a preparation job noted."""
        with self.r.pipeline() as p:
            p.delete(keys.avatar_job(avatar_id))
            p.hdel(keys.AVATAR_OWNERS, avatar_id)
            had_job, _ = p.execute()
        return bool(had_job)


class CyclePositions:
    """The owner keeps one tenant's labels ("room-a") from moving another tenant's cycle."""

    def __init__(self, redis: Redis) -> None:
        self.r = redis

    def get(self, avatar_id: str, owner: str | None, room: str) -> int:
        return int(self.r.get(keys.cycle(avatar_id, owner, room)) or 0)

    def set(self, avatar_id: str, owner: str | None, room: str, position: int) -> None:
        self.r.set(keys.cycle(avatar_id, owner, room), position)


def note_worker_alive(redis: Redis, worker: str, ttl_ms: int) -> None:
    redis.set(keys.worker_alive(worker), "1", px=ttl_ms)


def note_worker_gone(redis: Redis, worker: str) -> None:
    redis.delete(keys.worker_alive(worker))


def worker_alive(redis: Redis, worker: str) -> bool:
    return bool(redis.exists(keys.worker_alive(worker)))
