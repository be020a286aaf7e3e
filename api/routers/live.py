"""`GET /live/<stream_key>.flv`: a live room as HTTP-FLV, for browsers (mpegts.js) and players.

Open like the media server's RTMP and HLS URLs (no API key): a room's play URLs are meant for its
audience. One relay per room and API process pulls the room's stream once (core/flvrelay.py).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, SettingsDep
from api.errors import ApiError
from api.services.rooms import audience_state
from core.credentials import STREAM_KEY
from core.flvrelay import RelayHub
from core.rooms import RoomStore, stream_is_open_async

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])


def source_url(settings, stream_key: str) -> str:
    """Where a room's stream is pulled from: the URL its publisher pushes to."""
    return settings.publish_url_template.format(stream_key=stream_key, rtmp_port=settings.rtmp_port,
                                                media_http_port=settings.media_http_port,
                                                media_host=settings.media_public_host)


def make_hub(settings, aredis) -> RelayHub:
    async def still_live(key: str) -> bool:
        # The room's liveness key (core/rooms.py): gone once the room is closed or expired.
        return await stream_is_open_async(aredis, key)

    return RelayHub(source_url_for=lambda key: source_url(settings, key), redis=aredis,
                    max_lag_s=settings.flv_max_lag_s, linger_s=settings.flv_linger_s,
                    max_viewers=settings.flv_max_viewers, still_live=still_live)


@router.get("/live/{stream_key}/state", summary="A room's state for its audience page: live, speaking or offline",
            responses={200: {"content": {"application/json": {"example": {"state": "live", "open": True}}}}})
async def live_state(stream_key: str, settings: SettingsDep, redis: RedisDep) -> dict:
    # Open like the play URLs (the stream key is what the audience has); says nothing else about the room.
    if not STREAM_KEY.match(stream_key):
        raise ApiError(404, "unknown_room", f"no live stream {stream_key!r}")
    return await run_in_threadpool(audience_state, RoomStore(redis, settings), stream_key)


@router.get("/live/{name}", summary="Watch a live room as HTTP-FLV (low latency; mpegts.js in browsers)",
            responses={200: {"content": {"video/x-flv": {}}}})
async def live_flv(name: str, request: Request, settings: SettingsDep, redis: RedisDep):
    key = name[:-4] if name.endswith(".flv") else ""
    if not STREAM_KEY.match(key):
        raise ApiError(404, "unknown_room", f"no live stream {name!r}")
    store = RoomStore(redis, settings)
    room = await run_in_threadpool(store.by_stream_key, key)  # the stream key only, never a room id
    if room is None or not await run_in_threadpool(store.is_open, room.id):
        raise ApiError(404, "unknown_room", f"no open room with stream key {key!r}")
    hub: RelayHub = request.app.state.relays
    if hub.viewer_count >= hub.max_viewers:
        raise ApiError(503, "too_many_viewers", "this server has reached its FLV viewer limit; try HLS")
    relay, viewer = hub.join(key)
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
