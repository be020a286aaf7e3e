"""Avatars as clients see them: who may use one, its preparation state, and what the avatar routes
do (prepare, list, delete, its first frame and face), raising domain errors."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from enum import Enum
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from rq.job import JobStatus

from api.schemas.avatars import AvatarAccepted, AvatarFace, AvatarOut
from api.services.files import probed_ref
from api.uploads import check_sample
from lipsync.upkeep import state as enrollment_state
from core import keys
from core.errors import Conflict, Forbidden, NotFound
from core.jobs import Kind, enqueue, fetch_job, new_job_id
from core.registry import AvatarRegistry

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
    return AvatarRegistry(redis).owner(avatar_id)


def avatar_dir(settings, avatar_id: str) -> Path:
    # The id becomes a directory name: anything else is unknown rather than a path to follow.
    if not AVATAR_ID.match(avatar_id):
        raise NotFound("unknown_avatar", f"no avatar {avatar_id!r}")
    return settings.data_dir / "avatars" / avatar_id


def read_avatar(settings, redis, avatar_id: str) -> AvatarOut:
    path = avatar_dir(settings, avatar_id)
    job_id = AvatarRegistry(redis).get(avatar_id).job_id
    view = fetch_job(redis, job_id) if job_id else None
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


# ---- what the avatar routes do ----

def check_reprepare(settings, redis, caller: Caller, avatar_id: str) -> None:
    """Re-preparing a named avatar: another key's is refused as not its own (403), not unknown."""
    try:
        check_avatar_access(settings, redis, caller, avatar_id, change=True)
    except NotFound as exc:
        raise Forbidden("not_owner", f"avatar {avatar_id!r} belongs to another API key") from exc


def enqueue_preparation(settings, redis, caller: Caller, ref: str, avatar_id: str | None, options: dict,
                        sample: str | None) -> AvatarAccepted:
    """Enqueue the preparation of `ref` (an owned video or image) as `avatar_id` (new when None)."""
    avatar_id = avatar_id or f"av-{uuid.uuid4().hex[:12]}"
    # The key that makes a new avatar owns it; re-preparing keeps the owner (or keeps a shared one shared).
    registry = AvatarRegistry(redis)
    if caller.owner is not None and not avatar_dir(settings, avatar_id).exists():
        registry.claim(avatar_id, caller.owner)
    job_id = new_job_id()
    kwargs = {"source": ref, "avatar_id": avatar_id, "options": options, "speech_sample": sample}
    enqueue(settings, redis, Kind.avatar, kwargs, job_id, owner=caller.owner)
    registry.note_job(avatar_id, job_id, settings.result_ttl_s)
    return AvatarAccepted(avatar_id=avatar_id, job_id=job_id, status_url=f"/v1/jobs/{job_id}",
                          avatar_url=f"/v1/avatars/{avatar_id}")


def checked_sample(settings, redis, caller: Caller, source: str) -> str:
    """An owned talking clip given by reference, checked as an uploaded sample would be."""
    ref, info = probed_ref(settings, source, ("sample_undecodable", "the speech sample is not a decodable video"),
                           redis=redis, caller=caller)
    check_sample(info, settings)
    return ref


def list_avatars(settings, redis, caller: Caller) -> list[AvatarOut]:
    """The caller's prepared avatars and the shared ones, newest first (one being prepared counts
    as newest): what an operator just made is what they pick."""
    root = settings.data_dir / "avatars"
    ids = sorted(p.name for p in root.iterdir() if (p / "avatar.json").is_file()) if root.is_dir() else []
    owners = AvatarRegistry(redis).owners()
    avatars = [read_avatar(settings, redis, i) for i in ids if caller.may_use(owners.get(i))]
    return sorted(avatars, key=lambda a: a.prepared_at if a.prepared_at is not None else float("inf"), reverse=True)


def delete_avatar(settings, redis, caller: Caller, avatar_id: str) -> None:
    path = avatar_dir(settings, avatar_id)
    check_avatar_access(settings, redis, caller, avatar_id, change=True)
    existed = path.is_dir()
    shutil.rmtree(path, True)  # the files first: never an avatar without its owner
    if not (AvatarRegistry(redis).forget(avatar_id) or existed):
        raise NotFound("unknown_avatar", f"no avatar {avatar_id!r}")


def prepared_dir(settings, redis, caller: Caller, avatar_id: str) -> Path:
    """The directory of an avatar the caller may use and that is prepared."""
    check_avatar_access(settings, redis, caller, avatar_id)
    path = avatar_dir(settings, avatar_id)
    if not (path / "avatar.json").is_file():
        raise NotFound("unknown_avatar", f"no prepared avatar {avatar_id!r}")
    return path


def avatar_image(settings, redis, caller: Caller, avatar_id: str, max_side: int) -> bytes:
    """The avatar's first frame as JPEG, no larger than `max_side` (0: full size)."""
    from PIL import Image

    frame = prepared_dir(settings, redis, caller, avatar_id) / "frames" / "000000.jpg"
    if not frame.is_file():
        raise NotFound("unknown_avatar", f"avatar {avatar_id!r} has no frames")
    with Image.open(frame) as img:
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=88)
        return out.getvalue()


def avatar_face(settings, redis, caller: Caller, avatar_id: str) -> AvatarFace:
    """Mouth, lip and jaw landmarks of the first frame (to animate the portrait without video)."""
    import numpy as np

    from avatars import face

    path = prepared_dir(settings, redis, caller, avatar_id)
    manifest = json.loads((path / "avatar.json").read_text())
    points = np.load(path / "landmarks.npy", mmap_mode="r")[0]

    def pt(i: int) -> tuple[float, float]:
        return round(float(points[i][0]), 1), round(float(points[i][1]), 1)

    return AvatarFace(
        width=int(manifest["width"]), height=int(manifest["height"]), fps=int(manifest.get("fps", 25)),
        mouth_left=pt(face.MOUTH_LEFT), mouth_right=pt(face.MOUTH_RIGHT), upper_inner=pt(face.LIP_UPPER_IN),
        lower_inner=pt(face.LIP_LOWER_IN), upper_outer=pt(face.LIPS_OUTER[15]), lower_outer=pt(face.LIPS_OUTER[5]),
        chin=pt(face.CHIN), nose_tip=pt(face.NOSE_TIP), lips_outer=[pt(i) for i in face.LIPS_OUTER],
        jaw=[pt(i) for i in face.JAW])
