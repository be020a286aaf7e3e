"""Files the service owns: client references checked and resolved, audio checked for use."""

from __future__ import annotations

from pathlib import Path

from core.errors import Invalid, NotFound
from core.files import NotOwnedError, public_ref, resolve_owned
from core.media import MediaError, MediaInfo, probe
from core.settings import Settings


def owned_path(settings: Settings, ref: str, code: str = "not_found") -> Path:
    """The path of a file the service owns (`code`: the error's code when it owns no such file)."""
    try:
        return resolve_owned(settings, ref)
    except NotOwnedError as exc:
        raise NotFound(code, str(exc)) from exc


def owned_ref(settings: Settings, ref: str) -> str:
    """Normalise a client's reference to a file the service owns."""
    return public_ref(settings, owned_path(settings, ref, "file_not_owned"))


def check_audio(info: MediaInfo, max_s: float) -> None:
    if not info.has_audio:
        raise Invalid("undecodable_audio", "the file has no audio track")
    if info.duration_s > max_s:
        raise Invalid("audio_too_long", f"audio is {info.duration_s:.1f} s; the limit is {max_s:.0f} s")


def owned_audio(settings: Settings, ref: str, max_s: float) -> tuple[str, float]:
    """(owned reference, duration) of decodable audio no longer than `max_s`."""
    path = owned_path(settings, ref, "file_not_owned")
    try:
        info = probe(path)
    except MediaError as exc:
        raise Invalid("undecodable_audio", "not a decodable audio file") from exc
    check_audio(info, max_s)
    return public_ref(settings, path), info.duration_s
