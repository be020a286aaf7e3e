"""Files the service owns, and the only way a client-supplied name becomes a path.

Clients name files as ``tests/<name>`` (the legacy namespace), ``<kind>/<name>`` or ``<name>``;
a name is one path component from a strict alphabet and is looked up only inside the
service's data directories, so no client string can reach elsewhere on disk.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from core import keys
from core.settings import Settings

# Directories whose files clients may download and pass back as inputs, in lookup order.
PUBLIC_KINDS = ("tts", "uploads", "asr", "lipsync", "feedback")  # feedback: answer frame images
LEGACY_PREFIX = "tests"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.*\-]{0,199}$")


class NotOwnedError(LookupError):
    """The reference does not name a file this service produced or received."""


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and ".." not in name


def resolve_owned(settings: Settings, ref: str) -> Path:
    ref = (ref or "").strip()
    # Legacy clients sometimes send the full download URL; only its path matters.
    if "://" in ref:
        ref = ref.split("://", 1)[1].split("/", 1)[-1] if "/" in ref.split("://", 1)[1] else ""
    ref = ref.split("?", 1)[0].lstrip("/")
    if ref.startswith("v1/files/"):
        ref = ref[len("v1/files/"):]
    parts = ref.split("/")
    if len(parts) == 1:
        kinds, name = PUBLIC_KINDS, parts[0]
    elif len(parts) == 2 and parts[0] == LEGACY_PREFIX:
        kinds, name = PUBLIC_KINDS, parts[1]
    elif len(parts) == 2 and parts[0] in PUBLIC_KINDS:
        kinds, name = (parts[0],), parts[1]
    else:
        raise NotOwnedError(f"not a file of this service: {ref!r}")
    if not valid_name(name):
        raise NotOwnedError(f"not a file of this service: {ref!r}")
    root = settings.data_dir.resolve()
    for kind in kinds:
        path = (root / kind / name).resolve()
        if path.is_relative_to(root / kind) and path.is_file():
            return path
    raise NotOwnedError(f"no such file: {ref!r}")


def public_ref(settings: Settings, path: Path) -> str:
    """``<kind>/<name>`` for a file under a public data directory."""
    rel = path.resolve().relative_to(settings.data_dir.resolve())
    return "/".join(rel.parts)


def _stems(name: str) -> list[str]:
    """`a.b.mouth.json` -> a.b.mouth.json, a.b.mouth, a.b, a: a job registers its output name once,
    and every file it writes (``<name>.mp4``, ``<name>.mouth.json``) is found by it."""
    out = [name]
    while "." in name:
        name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


class FileOwners:
    """Who made each file clients can name (an upload, or a job's output): the hash of the API key
    (api/access.py), recorded when the upload is accepted or the job enqueued, under
    ``<kind>/<upload name>`` or ``<kind>/<output name>``. A file with no record is shared (made while
    the service was open, or by an allowed address). The janitor forgets a record with its file."""

    def __init__(self, redis) -> None:
        self.r = redis

    def claim(self, ref: str, owner: str | None) -> None:
        if owner:
            self.r.hset(keys.FILE_OWNERS, ref, f"{owner} {int(time.time())}")

    def owner_of(self, path: Path) -> str | None:
        kind = path.parent.name
        fields = [f"{kind}/{stem}" for stem in _stems(path.name)]
        for raw in self.r.hmget(keys.FILE_OWNERS, fields):
            if raw:
                return raw.decode().split(" ", 1)[0]
        return None

    def prune(self, data_dir: Path, max_age_s: float, now: float | None = None) -> int:
        """Records older than `max_age_s` whose files are all gone (e.g. a job that failed)."""
        now = time.time() if now is None else now
        present: dict[str, set[str]] = {}  # kind -> every stem of every file there, listed once
        stale = []
        for field, raw in self.r.hscan_iter(keys.FILE_OWNERS):
            ref, value = field.decode(), raw.decode()
            made = float(value.split(" ", 1)[1]) if " " in value else 0.0
            kind, _, stem = ref.partition("/")
            if now - made <= max_age_s:
                continue
            if kind not in present:
                directory = data_dir / kind
                names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
                present[kind] = {s for name in names for s in _stems(name)}
            if stem not in present[kind]:
                stale.append(field)
        if stale:
            self.r.hdel(keys.FILE_OWNERS, *stale)
        return len(stale)
