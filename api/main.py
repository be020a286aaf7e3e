"""The FastAPI application factory (no module-level app state)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.access import warn_if_open
from api.errors import install_error_handlers
from api.gate import Gate
from api.observability import RequestMetrics
from api.openapi import install_openapi
from api.observability import router as metrics_router
from api.ratelimit import RateLimit
from api.routers import asr, avatars, console, files, fleet, health, jobs, legacy, lipsync, live, rooms, tts
from api.routers import conversations, feedback, interviews, publish
from core import metrics
from core.credentials import redis_password
from core.jobs import redis_connection
from core.settings import Settings, get_settings


log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics.init(settings)  # before any metric is touched: prometheus_client's multiprocess files

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        warn_if_open(settings)
        app.state.redis = redis_connection(settings)
        # Bounded and blocking: a burst of requests waits for a connection instead of failing.
        # Retried: after a Redis restart every pooled connection is dead once (redis.asyncio does not
        # retry by default, unlike the sync client).
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, password=redis_password(settings),
                                                        max_connections=settings.api_redis_connections, timeout=10,
                                                        retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 5))
        app.state.aredis = aioredis.Redis(connection_pool=pool)
        app.state.relays = live.make_hub(settings, app.state.aredis)  # HTTP-FLV relays of this process
        # Room feeds (WebSockets) block in XREAD: a pool of their own, so they never starve requests.
        app.state.feeds = aioredis.Redis.from_url(settings.redis_url, password=redis_password(settings),
                                                  max_connections=settings.max_feeds)
        app.state.feed_count = 0
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        yield
        await app.state.relays.close()
        app.state.redis.close()
        await app.state.aredis.aclose()
        await app.state.feeds.aclose()

    app = FastAPI(title="musetalk-live", version="0.1.0", lifespan=lifespan,
                  description="Talking digital humans for live rooms: TTS, ASR, lip-sync and live streams. "
                              "Legacy GET endpoints keep the old service's contracts; new features live under /v1.\n\n"
                              "A room's live feed is a WebSocket (not listed below, OpenAPI has no WebSockets): "
                              "`GET /v1/rooms/{room_ref}/ws` (`?key=`, `?since=<feed id>`) sends JSON events in "
                              "order: `user_text`, `reply_delta`, `reply_sentence`, `speech_start`/`speech_end` with "
                              "`stream_ts` (the stream clock), `mouth` with per-frame `{t, open, width}`, "
                              "`interrupted`, `responder_fallback`, ... (see the README, Conversations).")
    # Added first, so it runs inside CORS and a 401/413 still carries the CORS headers.
    app.add_middleware(Gate, settings=settings)  # access, body kind and size, text: before the body is read
    app.add_middleware(RateLimit, settings=settings)  # outside the gate: a refusal reads no body
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"])
    app.add_middleware(RequestMetrics)  # outermost: every request's latency, refusals included
    install_error_handlers(app)
    app.include_router(metrics_router)
    for module in (health, legacy, tts, asr, jobs, files, avatars, lipsync, rooms, conversations, fleet, live,
                   console, publish):
        app.include_router(module.router)
    for module in (interviews, feedback):  # each has legacy GET paths beside its /v1 ones
        app.include_router(module.legacy_router)
        app.include_router(module.router)
    console.mount_static(app)
    install_openapi(app)
    return app
