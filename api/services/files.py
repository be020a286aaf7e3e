"""Files the service owns: client references checked and resolved (and whether this caller may
use them), audio checked for use, uploads recorded as their caller's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import Invalid, NotFound
from core.files import PUBLIC_KINDS, FileOwners, NotOwnedError, public_ref, resolve_owned
from core.media import MediaError, MediaInfo, probe
from core.settings import Settings

if TYPE_CHECKING:
    from api.access import Caller


def owned_path(settings: Settings, ref: str, code: str = "not_found", *, redis, caller: Caller | None) -> Path:
    """The path of a file the service owns and this caller may use (`code`: the error's code when
    there is no such file, or it is another key's: the two read the same)."""
    try:
        path = resolve_owned(settings, ref)
    except NotOwnedError as exc:
        raise NotFound(code, str(exc)) from exc
    if caller is not None and not caller.may_use(FileOwners(redis).owner_of(path)):
        raise NotFound(code, f"no such file: {ref!r}")
    return path


def download_path(settings: Settings, kind: str, name: str, *, redis, caller: Caller | None) -> Path:
    """A file of a public kind (results, uploads) this caller may download."""
    if kind not in PUBLIC_KINDS:
        raise NotFound("not_found", f"no file kind {kind!r}")
    return owned_path(settings, f"{kind}/{name}", redis=redis, caller=caller)


def owned_ref(settings: Settings, ref: str, *, redis, caller: Caller | None) -> str:
    """Normalise a client's reference to a file the service owns."""
    return public_ref(settings, owned_path(settings, ref, "file_not_owned", redis=redis, caller=caller))


def probed_ref(settings: Settings, ref: str, undecodable: tuple[str, str], *, redis,
               caller: Caller | None) -> tuple[str, MediaInfo]:
    """(owned reference, what its media holds) of a file this caller may use; `undecodable`: the
    (code, message) of the error when it cannot be read as media."""
    ref = owned_ref(settings, ref, redis=redis, caller=caller)
    try:
        return ref, probe(resolve_owned(settings, ref))
    except MediaError as exc:
        raise Invalid(*undecodable) from exc


def claim_file(settings: Settings, redis, caller: Caller | None, path: Path) -> str:
    """Record an accepted upload as the caller's; returns its reference."""
    ref = public_ref(settings, path)
    FileOwners(redis).claim(ref, caller.owner if caller is not None else None)
    return ref


def check_audio(info: MediaInfo, max_s: float) -> None:
    if not info.has_audio:
        raise Invalid("undecodable_audio", "the file has no audio track")
    if info.duration_s > max_s:
        raise Invalid("audio_too_long", f"audio is {info.duration_s:.1f} s; the limit is {max_s:.0f} s")


def owned_audio(settings: Settings, ref: str, max_s: float, *, redis, caller: Caller | None) -> tuple[str, float]:
    """(owned reference, duration) of decodable audio no longer than `max_s`."""
    path = owned_path(settings, ref, "file_not_owned", redis=redis, caller=caller)
    try:
        info = probe(path)
    except MediaError as exc:
        raise Invalid("undecodable_audio", "not a decodable audio file") from exc
    check_audio(info, max_s)
    return public_ref(settings, path), info.duration_s
