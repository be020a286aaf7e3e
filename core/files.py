"""Files the service owns, and the only way a client-supplied name becomes a path.

Clients name files as ``tests/<name>`` (the legacy namespace), ``<kind>/<name>`` or ``<name>``;
a name is one path component from a strict alphabet and is looked up only inside the
service's data directories, so no client string can reach elsewhere on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

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
