"""`GET /live/<stream_key>.flv`: a live room as HTTP-FLV, for browsers (mpegts.js) and players.

Open like the media server's RTMP and HLS URLs (no API key): a room's play URLs are meant for its
audience. One relay per room and API process pulls the room's stream once (api/services/live.py).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, SettingsDep
from api.services import live as service
from core.rooms import RoomStore

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])


@router.get("/live/{stream_key}/state", summary="A room's state for its audience page: live, speaking or offline",
            responses={200: {"content": {"application/json": {"example": {"state": "live", "open": True}}}}})
async def live_state(stream_key: str, settings: SettingsDep, redis: RedisDep) -> dict:
    # Open like the play URLs (the stream key is what the audience has); says nothing else about the room.
    return await run_in_threadpool(service.live_state, RoomStore(redis, settings), stream_key)


@router.get("/live/{name}", summary="Watch a live room as HTTP-FLV (low latency; mpegts.js in browsers)",
            responses={200: {"content": {"video/x-flv": {}}}})
async def live_flv(name: str, request: Request, settings: SettingsDep, redis: RedisDep):
    key, relay, viewer = await service.watch(RoomStore(redis, settings), request.app.state.relays, name)
    log.info("flv viewer %s joined %s (%d watching)", viewer.id, key, len(relay.viewers))

    async def body():
        try:
            async for chunk in viewer.chunks():
                yield chunk
        finally:
            relay.leave(viewer)
            log.info("flv viewer %s left %s after %d bytes (%d skips)", viewer.id, key, viewer.sent_bytes,
                     viewer.skips)

    return StreamingResponse(body(), media_type="video/x-flv",
                             headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})
