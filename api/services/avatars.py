"""Avatars as clients see them: who may use one, and its preparation state."""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from rq.job import JobStatus

from api.schemas.avatars import AvatarOut
from lipsync.upkeep import state as enrollment_state
from core import keys
from core.errors import Conflict, Forbidden, NotFound
from core.jobs import fetch_job

if TYPE_CHECKING:
    from api.access import Caller

AVATAR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class AvatarStatus(str, Enum):
    """An avatar's status once it can be rendered; until then it reads as its preparation job's
    status (rq.job.JobStatus: queued, started, failed, ...)."""

    READY = "ready"


OWNERS = keys.AVATAR_OWNERS  # hash: avatar id -> owner (a hash of the creating key, api/access.py)


def builtin_avatars(settings) -> set[str]:
    return {settings.demo_avatar_id}


def check_avatar_access(settings, redis, caller: Caller | None, avatar_id: str, change: bool = False) -> None:
    """Built-ins are read-only; another key's avatar does not exist for this caller."""
    if caller is None:
        return
    if change and avatar_id in builtin_avatars(settings):
        raise Forbidden("read_only", f"avatar {avatar_id!r} is built in and read-only")
    if not caller.may_use(avatar_owner(redis, avatar_id)):
        raise NotFound("unknown_avatar", f"no avatar {avatar_id!r}")


def avatar_owner(redis, avatar_id: str) -> str | None:
    raw = redis.hget(OWNERS, avatar_id)
    return raw.decode() if raw else None


def avatar_owners(redis) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(OWNERS).items()}


def claim_avatar(redis, avatar_id: str, owner: str) -> None:
    """A new avatar is its creator's; a re-prepared one keeps its owner."""
    redis.hsetnx(OWNERS, avatar_id, owner)


def note_avatar_job(redis, avatar_id: str, job_id: str, ttl_s: int) -> None:
    redis.set(keys.avatar_job(avatar_id), job_id, ex=ttl_s)


def forget_avatar(redis, avatar_id: str) -> bool:
    """Drop the avatar's records; whether it had a preparation job noted."""
    with redis.pipeline() as p:
        p.delete(keys.avatar_job(avatar_id))
        p.hdel(OWNERS, avatar_id)
        had_job, _ = p.execute()
    return bool(had_job)


def avatar_dir(settings, avatar_id: str) -> Path:
    # The id becomes a directory name: anything else is unknown rather than a path to follow.
    if not AVATAR_ID.match(avatar_id):
        raise NotFound("unknown_avatar", f"no avatar {avatar_id!r}")
    return settings.data_dir / "avatars" / avatar_id


def read_avatar(settings, redis, avatar_id: str) -> AvatarOut:
    path = avatar_dir(settings, avatar_id)
    raw_job = redis.get(keys.avatar_job(avatar_id))
    view = fetch_job(redis, raw_job.decode()) if raw_job else None
    manifest_path = path / "avatar.json"
    prepared = manifest_path.is_file()
    # A failed re-preparation leaves the prepared avatar in place: it stays ready, with the error.
    if view is not None and view.status != JobStatus.FINISHED and not (view.status == JobStatus.FAILED and prepared):
        return AvatarOut(id=avatar_id, status=view.status.value, job_id=view.id, progress=view.progress,
                         error=view.error)
    if prepared:
        manifest = json.loads(manifest_path.read_text())
        manifest.pop("cache_key", None)
        enrolled = path / "mouth" / "enrollment.json"  # lipsync/mouthbank.py writes it
        manifest["enrollment"] = json.loads(enrolled.read_text()) if enrolled.is_file() else None
        upkeep = enrollment_state(path, redis)
        return AvatarOut(id=avatar_id, status=AvatarStatus.READY.value, job_id=view.id if view else None, progress=1.0,
                         manifest=manifest, error=view.error if view else None,
                         prepared_at=manifest_path.stat().st_mtime,
                         enrollment_current=upkeep["current"], enrollment_state=upkeep)
    raise NotFound("unknown_avatar", f"no avatar {avatar_id!r}")


def ready_avatar(settings, redis, avatar_id: str) -> AvatarOut:
    """The avatar, if it can be rendered now (not while it is still being prepared)."""
    avatar = read_avatar(settings, redis, avatar_id)
    if avatar.status != AvatarStatus.READY:
        raise Conflict("avatar_not_ready", f"avatar {avatar_id!r} is {avatar.status}")
    return avatar
