"""Live rooms as their audience sees them (by stream key, without an API key): the room's state for
its page, and joining its HTTP-FLV relay; and who may publish a room's stream. One relay hub per API process pulls each room's stream
once (core/flvrelay.py). Errors are domain errors (core/errors.py) and refusals (core/limits.py)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from api.services.rooms import audience_state
from core.credentials import STREAM_KEY, may_publish
from core.errors import NotFound
from core.flvrelay import Relay, RelayHub, Viewer
from core.limits import Refused, Shortage
from core.rooms import RoomStore, stream_is_open_async


def may_publish_to(store: RoomStore, stream_key: str, secret: str | None) -> bool:
    """The media server's publish check: the room's own secret (core/credentials.py), and the room
    still open (a closed room is not republished)."""
    if not may_publish(store.settings, stream_key, secret):
        return False
    room = store.by_stream_key(stream_key)
    return room is not None and store.is_open(room.id)


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


def live_state(store: RoomStore, stream_key: str) -> dict:
    """live, speaking or offline; says nothing else about the room (the stream key is all the audience has)."""
    if not STREAM_KEY.match(stream_key):
        raise NotFound("unknown_room", f"no live stream {stream_key!r}")
    return audience_state(store, stream_key)


def open_stream_key(store: RoomStore, name: str) -> str:
    """The stream key of `<stream key>.flv`, if it names an open room (the stream key only, never a room id)."""
    key = name[:-4] if name.endswith(".flv") else ""
    if not STREAM_KEY.match(key):
        raise NotFound("unknown_room", f"no live stream {name!r}")
    room = store.by_stream_key(key)
    if room is None or not store.is_open(room.id):
        raise NotFound("unknown_room", f"no open room with stream key {key!r}")
    return key


async def watch(store: RoomStore, hub: RelayHub, name: str) -> tuple[str, Relay, Viewer]:
    """A new viewer of the open room `name` names: (stream key, its relay, the viewer)."""
    key = await run_in_threadpool(open_stream_key, store, name)
    if hub.viewer_count >= hub.max_viewers:
        raise Refused(Shortage.UNAVAILABLE, "too_many_viewers", "this server has reached its FLV viewer limit; try HLS")
    relay, viewer = hub.join(key)
    return key, relay, viewer
