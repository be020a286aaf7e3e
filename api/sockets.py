"""What the room WebSockets share: who may open one, and following a room's feed."""

from __future__ import annotations

import json
from typing import Awaitable, Callable

import redis.asyncio as aioredis
from fastapi import WebSocket
from starlette.concurrency import run_in_threadpool

from api.access import Caller
from api.deps import websocket_caller
from api.errors import ApiError
from api.services.rooms import get_room
from core.errors import NotFound
from core.live import FPS
from core.rooms import Room, RoomStore, feed_latest, feed_read


async def socket_room(websocket: WebSocket) -> tuple[RoomStore, Room, Caller] | None:
    """The open room a socket names and its caller, if the caller may use it; otherwise the handshake
    is refused (4401 no or bad key, 4404 no such room for this caller) and None returned."""
    settings, redis = websocket.app.state.settings, websocket.app.state.redis
    store = RoomStore(redis, settings)
    try:
        caller = websocket_caller(websocket, settings)
        room = await run_in_threadpool(get_room, store, websocket.path_params["room_ref"], caller)
    except ApiError as exc:
        await websocket.close(code=4401 if exc.status == 401 else 4404, reason=exc.message[:120])
        return None
    except NotFound as exc:
        await websocket.close(code=4404, reason=exc.message[:120])
        return None
    return store, room, caller


async def follow_feed(send: Callable[[str], Awaitable[None]], feeds: aioredis.Redis, store: RoomStore, room_id: str,
                      since: str | None, stop: Callable[[], bool] = lambda: False) -> None:
    """Sends the room's feed, in order, from `since` (default: from now), until `stop()` or the room
    closes (then a `room_closed` event is sent and this returns)."""
    if not since:
        since = await feed_latest(feeds, room_id)
    await send(json.dumps({"event": "hello", "room_id": room_id, "fps": FPS, "since": since}))
    while not stop():
        entries = await feed_read(feeds, room_id, since)
        for since, event in entries:
            await send(json.dumps({"id": since, **event}, ensure_ascii=False))
        if not entries and not await run_in_threadpool(store.is_open, room_id):
            await send(json.dumps({"event": "room_closed", "room_id": room_id}))
            return
