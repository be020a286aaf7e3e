"""Enrollment upkeep: the speech sample an avatar learned its mouth from is kept with the avatar, so
that when the mouth bank's format changes (lipsync/mouthbank.py BANK_VERSION) the avatar re-enrolls
itself in the background, as an `avatar` queue job, without its owner uploading anything again.

Until the new bank is in place the avatar keeps serving: its old bank cannot be read by the new
code, so renders and rooms use the `warp` engine, as for an avatar never enrolled. `state()` is what
`GET /v1/avatars/{id}` reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from enum import Enum
from pathlib import Path

from core import keys

log = logging.getLogger(__name__)

SAMPLE_META = "enrollment-sample.json"
def reenroll_key(avatar_id: str, version: str) -> str:
    # Avatar id and bank version -> the re-enrollment job id: one job per avatar and version, whatever
    # the number of avatar workers that notice it.
    return keys.avatar_reenroll(avatar_id, version)


def keep_sample(avatar_path: Path, sample: Path, origin: str) -> None:
    """Copy the clip the avatar was enrolled from next to it (`origin`: speech_sample | template)."""
    target = avatar_path / f"enrollment-sample{sample.suffix.lower() or '.mp4'}"
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(sample, tmp)
    tmp.replace(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    (avatar_path / SAMPLE_META).write_text(json.dumps({"file": target.name, "sha256": digest, "from": origin}))


def kept_sample(avatar_path: Path) -> Path | None:
    try:
        meta = json.loads((avatar_path / SAMPLE_META).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    path = avatar_path / meta.get("file", "")
    return path if path.is_file() and path.parent == avatar_path else None


def _enrolled_version(avatar_path: Path) -> str | None:
    from lipsync.mouthbank import bank_dir

    try:
        return json.loads((bank_dir(avatar_path) / "enrollment.json").read_text()).get("version")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_stale(avatar_path: Path) -> bool:
    """Enrolled in an older bank format, with the sample kept to enroll again."""
    from lipsync.mouthbank import BANK_VERSION

    version = _enrolled_version(avatar_path)
    return version is not None and version != BANK_VERSION and kept_sample(avatar_path) is not None


class EnrollmentState(str, Enum):
    """Where an avatar's enrollment (its mouth bank) stands against this code's bank format."""

    NONE = "none"  # never enrolled
    CURRENT = "current"  # enrolled in this code's format
    OUTDATED = "outdated"  # an older one: serving with warp until re-enrolled
    REENROLLING = "reenrolling"  # its re-enrollment job is queued or running


def state(avatar_path: Path, redis) -> dict:
    """The avatar's EnrollmentState (`state`), with the versions behind it."""
    from lipsync.mouthbank import BANK_VERSION

    version = _enrolled_version(avatar_path)
    out = {"version": version, "expected_version": BANK_VERSION, "sample_kept": kept_sample(avatar_path) is not None,
           "reenroll_job_id": None}
    if version is None:
        return {**out, "current": None, "state": EnrollmentState.NONE}
    if version == BANK_VERSION:
        return {**out, "current": True, "state": EnrollmentState.CURRENT}
    raw = redis.get(reenroll_key(avatar_path.name, BANK_VERSION))
    job_id = raw.decode() if raw else None
    late = EnrollmentState.REENROLLING if job_id else EnrollmentState.OUTDATED
    return {**out, "current": False, "state": late, "reenroll_job_id": job_id}


def enqueue_stale(settings, redis) -> list[str]:
    """Enqueue a background re-enrollment for every avatar whose bank is in an older format (once per
    avatar and format, across workers); returns the avatar ids enqueued now."""
    from lipsync.mouthbank import BANK_VERSION
    from core.jobs import Kind, enqueue, new_job_id

    root = settings.data_dir / "avatars"
    started = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir() or not is_stale(path):
            continue
        job_id = new_job_id()
        # Claimed first, so two workers starting together enqueue one job.
        if not redis.set(reenroll_key(path.name, BANK_VERSION), job_id, nx=True, ex=settings.result_ttl_s):
            continue
        enqueue(settings, redis, Kind.avatar, {"source": None, "avatar_id": path.name, "reenroll": True}, job_id,
                admit=False)
        log.info("avatar %s: bank %s is outdated (now %s); re-enrolling in the background (job %s)", path.name,
                 _enrolled_version(path), BANK_VERSION, job_id)
        started.append(path.name)
    return started
