"""Conversations with a room: messages in, replies spoken in the stream, and the room's live feed.
The routes read the request and hold no logic of their own: api/services/conversations.py does it."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.conversations import MessageAccepted, MessageIn, MessageOut
from api.services import conversations as service
from api.services.rooms import get_room
from api.sockets import follow_feed, socket_room
from core.rooms import RoomStore

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/rooms", tags=["conversations"])
# Material read without a room: the console checks an operator's file before the room exists.
material_router = APIRouter(prefix="/v1/material", tags=["conversations"])
_MESSAGE_BODY = {"requestBody": {"content": {
    "application/json": {"schema": MessageIn.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "a spoken message (audio)"},
        "text": {"type": "string"}}}}}}}


async def body_parts(request: Request) -> service.Parts:
    """The body as it came: a multipart form's `file` and `text`, or the raw body. Read only once the
    room is known to be the caller's (an upload for someone else's room is never read)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        return service.Parts(form=True, file=form.get("file"), text=form.get("text"))
    return service.Parts(form=False, body=await request.body(), content_type=content_type)


@router.post("/{room_ref}/messages", status_code=202, response_model=MessageAccepted, openapi_extra=_MESSAGE_BODY,
             dependencies=[Depends(require_api_key)],
             summary="Say something to the room: it stops what it is saying and answers in its stream")
async def create_message(room_ref: str, request: Request, settings: SettingsDep, redis: RedisDep,
                         caller: CallerDep) -> MessageAccepted:
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), room_ref, caller)
    message = await service.send_message(settings, redis, caller, room, await body_parts(request))
    return MessageAccepted(message_id=message.id, room_id=room.id, turn=message.turn, job_id=message.job_id,
                           asr_job_id=message.asr_job_id, status=message.status,
                           ws_url=settings.api_base.replace("http", "ws", 1) + f"/v1/rooms/{room.id}/ws")


@router.get("/{room_ref}/messages", response_model=list[MessageOut], dependencies=[Depends(require_api_key)],
            summary="The room's conversation, oldest first (kept for a while after the room closes)")
async def list_messages(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[dict]:
    return await run_in_threadpool(service.room_history, settings, redis, caller, room_ref)


# ---- the operator's material (the faq responder answers from it) ----

_MATERIAL_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "description": "{products: [{id, name, price, facts, aliases}], "
                                    "qa: [{id, q, a}], shop: {shipping, how_to_buy, discount, returns}}; any text "
                                    "may be a string or {zh, en}"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "JSON as above, or CSV with columns name, price, facts[, aliases] "
                                "(facts separated by ;) or question, answer"}}}}}}}


@router.put("/{room_ref}/material", dependencies=[Depends(require_api_key)], openapi_extra=_MATERIAL_BODY,
            summary="Set the room's material (products, prices, Q/A pairs, shop answers) for the faq responder")
async def put_material(room_ref: str, request: Request, settings: SettingsDep, redis: RedisDep,
                       caller: CallerDep) -> dict:
    room = await run_in_threadpool(get_room, RoomStore(redis, settings), room_ref, caller, True)
    return await service.put_material(redis, room, await body_parts(request))


@material_router.post("/check", dependencies=[Depends(require_api_key)], openapi_extra=_MATERIAL_BODY,
                      summary="Read and check a material file (JSON or CSV) without storing it",
                      description="Answers the material as PUT /v1/rooms/{id}/material would store it "
                                  "(`source`: checked), or the same plain 4xx error. Any API key may use it: "
                                  "it stores nothing and reads nothing of anyone's.")
async def check_material_file(request: Request) -> dict:
    return await service.checked_material(await body_parts(request))


@router.get("/{room_ref}/material", dependencies=[Depends(require_api_key)],
            summary="The room's material (`source`: room, or sample when it has none and the sample answers)")
async def get_material(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> dict:
    return await run_in_threadpool(service.room_material, settings, redis, caller, room_ref)


@router.delete("/{room_ref}/material", status_code=204, dependencies=[Depends(require_api_key)],
               summary="Remove the room's material (the faq responder falls back to the sample sheet)")
async def delete_material(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> None:
    await run_in_threadpool(service.delete_material, settings, redis, caller, room_ref)


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
