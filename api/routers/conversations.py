"""Conversations with a room: messages in, replies spoken in the stream, and the room's live feed."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.errors import ApiError
from api.schemas.conversations import MessageAccepted, MessageIn, MessageOut
from api.services.files import claim_file, owned_audio
from api.services.rooms import get_room
from api.sockets import follow_feed, socket_room
from api.uploads import save_audio_upload
from core.conversations.faq import check_material, parse_material, sample_material
from core.conversations.service import history, post_message
from core.conversations.store import MaterialStore
from core.errors import NotFound
from core.conversations.store import ConversationStore
from core.rooms import ROOM_ID, RoomStore
from core.text import check_text

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/rooms", tags=["conversations"])
# Material read without a room: the console checks an operator's file before the room exists.
material_router = APIRouter(prefix="/v1/material", tags=["conversations"])
_MESSAGE_BODY = {"requestBody": {"content": {
    "application/json": {"schema": MessageIn.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "a spoken message (audio)"},
        "text": {"type": "string"}}}}}}}


def _message_audio(settings, ref: str, redis, caller) -> str:
    return owned_audio(settings, ref, settings.max_message_audio_s, redis=redis, caller=caller)[0]


async def _read_message(request: Request, settings, redis, caller) -> tuple[str | None, str | None]:
    """(text, audio reference) from a JSON body or a multipart form."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload, text = form.get("file"), form.get("text")
        if upload is not None and getattr(upload, "filename", None):
            path, _info = await save_audio_upload(settings, upload)
            ref = await run_in_threadpool(claim_file, settings, redis, caller, path)
            return None, await run_in_threadpool(_message_audio, settings, ref, redis, caller)
        return (check_text(text, "text") if isinstance(text, str) else None), None
    try:
        body = MessageIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ApiError(422, "invalid_input", "a JSON object with `text` or `audio`, or a multipart form with "
                       "`file` or `text`") from exc
    if body.audio and body.text:
        raise ApiError(422, "invalid_input", "give `text` or `audio`, not both")
    if body.audio:
        return None, await run_in_threadpool(_message_audio, settings, body.audio, redis, caller)
    return body.text, None


@router.post("/{room_ref}/messages", status_code=202, response_model=MessageAccepted, openapi_extra=_MESSAGE_BODY,
             dependencies=[Depends(require_api_key)],
             summary="Say something to the room: it stops what it is saying and answers in its stream")
async def create_message(room_ref: str, request: Request, settings: SettingsDep, redis: RedisDep,
                         caller: CallerDep) -> MessageAccepted:
    store = RoomStore(redis, settings)
    room = await run_in_threadpool(get_room, store, room_ref, caller)
    text, audio = await _read_message(request, settings, redis, caller)
    message = await run_in_threadpool(post_message, redis, settings, room, text, audio, caller.owner)
    return MessageAccepted(message_id=message.id, room_id=room.id, turn=message.turn, job_id=message.job_id,
                           asr_job_id=message.asr_job_id, status=message.status,
                           ws_url=settings.api_base.replace("http", "ws", 1) + f"/v1/rooms/{room.id}/ws")


def _history_room_id(store: RoomStore, ref: str, caller) -> str:
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


@router.get("/{room_ref}/messages", response_model=list[MessageOut], dependencies=[Depends(require_api_key)],
            summary="The room's conversation, oldest first (kept for a while after the room closes)")
async def list_messages(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[dict]:
    store = RoomStore(redis, settings)
    room_id = await run_in_threadpool(_history_room_id, store, room_ref, caller)
    return await run_in_threadpool(history, redis, settings, room_id)


# ---- the operator's material (the faq responder answers from it) ----

_MATERIAL_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "description": "{products: [{id, name, price, facts, aliases}], "
                                    "qa: [{id, q, a}], shop: {shipping, how_to_buy, discount, returns}}; any text "
                                    "may be a string or {zh, en}"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "JSON as above, or CSV with columns name, price, facts[, aliases] "
                                "(facts separated by ;) or question, answer"}}}}}}}


def _material_out(material: dict | None) -> dict:
    source = "room" if material is not None else "sample"
    material = material if material is not None else sample_material()
    return {"source": source, "products": len(material.get("products") or []), "qa": len(material.get("qa") or []),
            "shop": sorted((material.get("shop") or {}).keys()), "material": material}


async def _read_material(request: Request) -> dict:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or not getattr(upload, "filename", None):
            raise ApiError(422, "missing_parameter", "a multipart form needs the material as `file`")
        raw = await upload.read(MAX_MATERIAL_READ)
        return await run_in_threadpool(parse_material, raw, upload.filename or "", upload.content_type or "")
    raw = await request.body()
    if len(raw) >= MAX_MATERIAL_READ:
        raise ApiError(413, "material_too_large", "the material is too large")
    return await run_in_threadpool(parse_material, raw, "", request.headers.get("content-type", ""))


MAX_MATERIAL_READ = 1024 * 1024  # read at most this much; parse_material applies the real limit


@router.put("/{room_ref}/material", dependencies=[Depends(require_api_key)], openapi_extra=_MATERIAL_BODY,
            summary="Set the room's material (products, prices, Q/A pairs, shop answers) for the faq responder")
async def put_material(room_ref: str, request: Request, settings: SettingsDep, redis: RedisDep,
                       caller: CallerDep) -> dict:
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), room_ref, caller, True)
    material = check_material(await _read_material(request))
    await run_in_threadpool(MaterialStore(redis).put, room.id, material)
    return _material_out(material)


@material_router.post("/check", dependencies=[Depends(require_api_key)], openapi_extra=_MATERIAL_BODY,
                      summary="Read and check a material file (JSON or CSV) without storing it",
                      description="Answers the material as PUT /v1/rooms/{id}/material would store it "
                                  "(`source`: checked), or the same plain 4xx error. Any API key may use it: "
                                  "it stores nothing and reads nothing of anyone's.")
async def check_material_file(request: Request) -> dict:
    return {**_material_out(check_material(await _read_material(request))), "source": "checked"}


@router.get("/{room_ref}/material", dependencies=[Depends(require_api_key)],
            summary="The room's material (`source`: room, or sample when it has none and the sample answers)")
async def get_material(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> dict:
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), room_ref, caller)
    return _material_out(await run_in_threadpool(MaterialStore(redis).get, room.id))


@router.delete("/{room_ref}/material", status_code=204, dependencies=[Depends(require_api_key)],
               summary="Remove the room's material (the faq responder falls back to the sample sheet)")
async def delete_material(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> None:
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), room_ref, caller, True)
    await run_in_threadpool(MaterialStore(redis).delete, room.id)


# ---- the live feed ----

@router.websocket("/{room_ref}/ws")
async def room_feed(websocket: WebSocket, room_ref: str) -> None:
    """Everything a front-end follows, in order, as JSON objects with an `event` field: user_text,
    reply_start, reply_delta, reply_sentence, reply_end, speech_start/speech_end (with `stream_ts`, the
    stream clock in seconds), mouth (per-frame `t` on the stream clock, `open`, `width`), clock (`stream_ts`
    once a second: with each event's `t`, when the publisher sent that stream time), interrupted,
    responder_fallback, message_failed, ...; each carries its feed `id`: reconnect with `?since=<id>`
    to get what was missed. Keys: `?key=` or the usual headers."""
    opened = await socket_room(websocket)
    if opened is None:
        return
    store, room, _caller = opened
    settings = store.settings
    feeds = websocket.app.state.feeds
    if websocket.app.state.feed_count >= settings.max_feeds:
        await websocket.close(code=1013, reason="too many feeds on this API process; retry")
        return
    await websocket.accept()
    websocket.app.state.feed_count += 1
    closed = asyncio.ensure_future(_until_closed(websocket))
    try:
        await follow_feed(websocket.send_text, feeds, store, room.id, websocket.query_params.get("since"),
                          stop=closed.done)
        if not closed.done():
            await websocket.close(code=1000)  # the room closed
    except WebSocketDisconnect:
        pass
    finally:
        closed.cancel()
        websocket.app.state.feed_count -= 1


async def _until_closed(websocket: WebSocket) -> None:
    """Reads (and ignores) what the client sends, so a closed connection is noticed."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
