"""The media server's publish check (nginx-rtmp ``on_publish``, SRS ``http_hooks on_publish``):
a publish is let through only to an open room's stream key with that room's publish secret, which
only the fleet's stream workers compute (core/credentials.py). Not part of the public API.

nginx-rtmp POSTs a form (``call=publish&name=<stream key>&addr=...`` plus the publish URL's own
arguments, here ``secret``) and refuses the publish on any answer but 2xx. SRS POSTs JSON
(``{"action": "on_publish", "stream": ..., "param": "?secret=..."}``) and wants ``0`` in the body.

Who may call it: anyone who reaches the API (the media server sends no key). It only answers whether a
secret is a room's, and each is 160 bits of an HMAC whose key never leaves the fleet.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from api.deps import RedisDep, SettingsDep
from api.services.live import may_publish_to
from core.credentials import STREAM_KEY
from core.mediaserver import PUBLISH_CHECK_PATH
from core.rooms import RoomStore

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


async def _publish_request(request: Request) -> tuple[str, str | None, str]:
    """(stream key, secret, publisher address) from nginx-rtmp's form or SRS's JSON."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            hook = json.loads(body)
        except ValueError:
            hook = {}
        hook = hook if isinstance(hook, dict) else {}
        param = parse_qs(str(hook.get("param", "")).lstrip("?"))
        return str(hook.get("stream", "")), (param.get("secret") or [None])[0], str(hook.get("ip", ""))
    form = parse_qs(body.decode("latin-1"))
    return (form.get("name") or [""])[0], (form.get("secret") or [None])[0], (form.get("addr") or [""])[0]


@router.post(PUBLISH_CHECK_PATH)
async def publish_check(request: Request, settings: SettingsDep, redis: RedisDep) -> PlainTextResponse:
    stream_key, secret, addr = await _publish_request(request)
    if not await run_in_threadpool(may_publish_to, RoomStore(redis, settings), stream_key, secret):
        shown = stream_key if STREAM_KEY.match(stream_key) else repr(stream_key[:80])
        log.warning("refused a publish to %s from %s (%s)", shown, addr or "?",
                    "no secret" if not secret else "wrong secret or closed room")
        return PlainTextResponse("refused", status_code=403)
    return PlainTextResponse("0")  # 2xx for nginx-rtmp; SRS reads the body: 0 is "allowed"
