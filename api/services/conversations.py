"""Conversations as callers use them: a message as a request carried it (text, or audio uploaded or
owned) checked and posted to the room, the room's history (kept a while after it closes), and the
operator's material for the faq responder. Errors are domain errors (core/errors.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.schemas.conversations import MessageIn
from api.services.files import owned_audio
from api.services.rooms import get_room
from api.uploads import save_audio_upload, save_owned
from core.conversations.faq import check_material, parse_material, sample_material
from core.conversations.service import history, post_message
from core.conversations.store import ConversationStore, MaterialStore, Message
from core.errors import Invalid, NotFound, TooLarge
from core.rooms import ROOM_ID, Room, RoomStore
from core.text import check_text

if TYPE_CHECKING:
    from api.access import Caller

MAX_MATERIAL_READ = 1024 * 1024  # read at most this much; parse_material applies the real limit


@dataclass
class Parts:
    """A request body as it came, not yet checked: a multipart form's `file` and `text` fields (either
    may be absent, or a plain string), or the raw body and its content type."""

    form: bool
    file: Any = None
    text: Any = None
    body: bytes = b""
    content_type: str = ""


def _is_upload(value: Any) -> bool:
    return value is not None and bool(getattr(value, "filename", None))


# ---- messages ----

def message_audio(settings, redis, caller: Caller, ref: str) -> str:
    return owned_audio(settings, ref, settings.max_message_audio_s, redis=redis, caller=caller)[0]


def json_message(settings, redis, caller: Caller, raw: bytes) -> tuple[str | None, str | None]:
    """(text, audio reference) of a JSON message: one of the two."""
    try:
        body = MessageIn.model_validate_json(raw)
    except ValidationError as exc:
        raise Invalid("invalid_input", "a JSON object with `text` or `audio`, or a multipart form with "
                      "`file` or `text`") from exc
    if body.audio and body.text:
        raise Invalid("invalid_input", "give `text` or `audio`, not both")
    if body.audio:
        return None, message_audio(settings, redis, caller, body.audio)
    return body.text, None


async def message_input(settings, redis, caller: Caller, parts: Parts) -> tuple[str | None, str | None]:
    """(text, audio reference) from a JSON body or a multipart form (an uploaded file becomes the caller's)."""
    if not parts.form:
        return await run_in_threadpool(json_message, settings, redis, caller, parts.body)
    if _is_upload(parts.file):
        ref, _path, _info = await save_owned(settings, parts.file, save_audio_upload, redis=redis, caller=caller)
        return None, await run_in_threadpool(message_audio, settings, redis, caller, ref)
    return (check_text(parts.text, "text") if isinstance(parts.text, str) else None), None


async def send_message(settings, redis, caller: Caller, room: Room, parts: Parts) -> Message:
    """Posts the message to the room: it stops what it is saying and answers in its stream."""
    text, audio = await message_input(settings, redis, caller, parts)
    return await run_in_threadpool(post_message, redis, settings, room, text, audio, caller.owner)


def history_room_id(store: RoomStore, ref: str, caller: Caller) -> str:
    """An open room, or a closed one whose transcript is still kept (by id, for its owner)."""
    try:
        return get_room(store, ref, caller).id
    except NotFound:
        if not ROOM_ID.match(ref) or not ConversationStore(store.r, store.settings).exists(ref):
            raise
        owner = store.owner(ref)
        if not caller.may_use(owner):
            raise
        return ref


def room_history(settings, redis, caller: Caller, ref: str) -> list[dict]:
    """The room's conversation, oldest first."""
    room_id = history_room_id(RoomStore(redis, settings), ref, caller)
    return history(redis, settings, room_id)


# ---- the operator's material ----

def material_view(material: dict | None) -> dict:
    """The material as clients read it (`source`: room, or sample when the room has none)."""
    source = "room" if material is not None else "sample"
    material = material if material is not None else sample_material()
    return {"source": source, "products": len(material.get("products") or []), "qa": len(material.get("qa") or []),
            "shop": sorted((material.get("shop") or {}).keys()), "material": material}


async def read_material(parts: Parts) -> dict:
    """The checked material of a form's `file` (JSON or CSV) or of a JSON body."""
    if parts.form:
        upload = parts.file
        if not _is_upload(upload):
            raise Invalid("missing_parameter", "a multipart form needs the material as `file`")
        raw = await upload.read(MAX_MATERIAL_READ)
        material = await run_in_threadpool(parse_material, raw, upload.filename or "", upload.content_type or "")
    else:
        if len(parts.body) >= MAX_MATERIAL_READ:
            raise TooLarge("material_too_large", "the material is too large")
        material = await run_in_threadpool(parse_material, parts.body, "", parts.content_type)
    return check_material(material)


async def put_material(redis, room: Room, parts: Parts) -> dict:
    """Sets the material of a room the caller may change (get_room with `change`)."""
    material = await read_material(parts)
    await run_in_threadpool(MaterialStore(redis).put, room.id, material)
    return material_view(material)


async def checked_material(parts: Parts) -> dict:
    """The material as put_material would store it, stored nowhere."""
    return {**material_view(await read_material(parts)), "source": "checked"}


def room_material(settings, redis, caller: Caller, ref: str) -> dict:
    room = get_room(RoomStore(redis, settings), ref, caller)
    return material_view(MaterialStore(redis).get(room.id))


def delete_material(settings, redis, caller: Caller, ref: str) -> None:
    room = get_room(RoomStore(redis, settings), ref, caller, True)
    MaterialStore(redis).delete(room.id)
