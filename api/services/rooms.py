"""Rooms as callers see them: which open room a reference names for a caller, and opening one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.services.avatars import check_avatar_access, ready_avatar
from core.errors import Forbidden, Invalid, NotFound
from core.rooms import (SESSION_OFF, SESSION_ON, SPEECH_OFF, SPEECH_ON, AudienceState, Room, RoomError, RoomStore,
                        latest_is)

if TYPE_CHECKING:
    from api.access import Caller


def get_room(store: RoomStore, ref: str, caller: Caller | None = None, change: bool = False) -> Room:
    """An open room the caller may use (another key's room is unknown to it); with `change`,
    the built-in default room is refused as read-only."""
    room = store.resolve(ref)
    if room is None or not store.is_open(room.id) or (caller is not None and not caller.may_use(store.owner(room.id))):
        raise NotFound("unknown_room", f"no open room {ref!r}")
    if change and room.zbjname == store.settings.default_room:
        raise Forbidden("read_only", f"room {room.zbjname!r} is built in and read-only")
    return room


def legacy_room(store: RoomStore, zbjname: str | None, caller: Caller | None) -> Room:
    """The room a legacy call names by its zbjname (another key's is unknown), or the built-in
    default room when it names none."""
    if zbjname and zbjname.strip():
        return get_room(store, zbjname.strip(), caller)
    return store.ensure_default()


def create_room(settings, redis, username=None, avatar_id=None, ttl_s=None, caller: Caller | None = None,
                **conversation) -> Room:
    """`conversation`: language, responder, system_prompt, llm_model, job (core.rooms.Room)."""
    avatar_id = avatar_id or settings.demo_avatar_id
    conversation["language"] = conversation.get("language") or settings.conversation_default_language
    check_avatar_access(settings, redis, caller, avatar_id)
    ready_avatar(settings, redis, avatar_id)
    try:
        return RoomStore(redis, settings).create(username=username, avatar_id=avatar_id, ttl_s=ttl_s,
                                                 owner=caller.owner if caller is not None else None,
                                                 **conversation)
    except RoomError as exc:
        raise Invalid("invalid_input", str(exc)) from exc


def audience_state(store: RoomStore, key: str) -> dict:
    """What an audience page shows: `offline` (closed, or not on air), `live` or `speaking`.
    Read from the publisher's own events, as the rooms list does, without the media server's /stat."""
    room = store.by_stream_key(key)
    if room is None or not store.is_open(room.id):
        return {"state": AudienceState.OFFLINE, "open": False}
    recent = store.events(room.id, last=40)
    if not latest_is(recent, SESSION_ON, SESSION_OFF):
        return {"state": AudienceState.OFFLINE, "open": True}
    pending, held = store.queue_state(room.id)
    speaking = latest_is(recent, SPEECH_ON, SPEECH_OFF) or held or pending > 0
    return {"state": AudienceState.SPEAKING if speaking else AudienceState.LIVE, "open": True}
