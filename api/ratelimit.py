"""Per-caller rate limits, counted in Redis with the `limits` package (moving window), so every API
process shares one count per caller.

A caller is its API key on /v1 when it sends a valid one (X-API-Key, Bearer, or ?key= where the
legacy routes accept it), else its client address (legacy routes always: old clients send no key).
Over the limit the answer is 429 `rate_limited` with Retry-After, in the path family's error shape
(legacy routes keep `message`). Pure ASGI and before the body is read, so a refusal costs one Redis
script call; health probes, the console's files and the live FLV relay are never limited.
If Redis cannot count, requests pass (logged) and counting pauses for a few seconds: the limiter
must not be what takes the API down or makes requests that need no Redis wait for it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from urllib.parse import parse_qs

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from core import keys
from core.settings import Settings
from api.access import key_in

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/healthz", "/readyz", "/metrics", "/live/", "/console", "/docs", "/redoc", "/openapi.json",
                   "/favicon.ico", "/internal/")  # /internal/: the media server's publish check
KEY_PREFIX = keys.RATELIMIT_PREFIX
SKIP_AFTER_FAILURE_S = 5.0


def caller_identity(scope: Scope, settings: Settings) -> str:
    path = scope.get("path", "")
    if path.startswith("/v1/"):
        headers = Headers(scope=scope)
        token = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if not token and auth.startswith("Bearer "):
            token = auth[7:]
        if not token and scope.get("query_string"):
            token = (parse_qs(scope["query_string"].decode("latin-1")).get("key") or [None])[0]
        valid = [*settings.api_keys, *(settings.admin_keys or [])]
        if token and key_in(token, valid):  # an invalid key is counted by address, so rotating keys buys nothing
            return "key:" + hashlib.sha256(token.encode()).hexdigest()[:24]
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.items: list[RateLimitItem] = parse_many(settings.rate_limit) if settings.rate_limit.strip() else []
        self.limiter: MovingWindowRateLimiter | None = None
        self._warned_at = 0.0
        self._skip_until = 0.0

    def _limiter(self, scope: Scope) -> MovingWindowRateLimiter:
        if self.limiter is None:
            # The app's own asyncio pool (made at start-up), not a second set of connections.
            pool = scope["app"].state.aredis.connection_pool
            storage = RedisStorage("async+" + self.settings.redis_url, implementation="redispy",
                                   key_prefix=KEY_PREFIX, connection_pool=pool)
            self.limiter = MovingWindowRateLimiter(storage)
        return self.limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.items or not self.settings.rate_limit_enabled
                or scope.get("path", "").startswith(EXEMPT_PREFIXES) or scope.get("method") == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if time.monotonic() < self._skip_until:  # Redis failed a moment ago: no waiting on it per request
            await self.app(scope, receive, send)
            return
        who = caller_identity(scope, self.settings)
        try:
            limiter = self._limiter(scope)
            for item in self.items:
                if not await limiter.hit(item, who):
                    stats = await limiter.get_window_stats(item, who)
                    retry = max(1, math.ceil(stats.reset_time - time.time()))
                    response = error_response(
                        Request(scope), 429, "rate_limited",
                        f"more than {item.amount} requests per {item.get_expiry()} s; retry in {retry} s",
                        headers={"Retry-After": str(retry)}, retry_after_s=retry)
                    await response(scope, receive, send)
                    return
        except Exception as exc:  # Redis away: serve rather than refuse everyone
            self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_S
            if time.monotonic() - self._warned_at > 30:
                self._warned_at = time.monotonic()
                log.warning("rate limits not counted (%s); requests pass", exc)
        await self.app(scope, receive, send)
