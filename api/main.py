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
from api.routers import conversations, feedback, interviews, publish, voice
from api.services.live import make_hub
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
        app.state.relays = make_hub(settings, app.state.aredis)  # HTTP-FLV relays of this process
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
                              "`interrupted`, `responder_fallback`, ... (see the README, Conversations).\n\n"
                              "A room's live audio input is a WebSocket too: `GET /v1/rooms/{room_ref}/audio` "
                              "(`?key=`, `?language=zh|en`; same access as the feed; one speaker socket per room). "
                              "Binary frames: PCM s16le mono 16 kHz, 20-100 ms each; text frames: JSON control "
                              "`{\"type\": \"end\"}` (end the utterance now) or `{\"type\": \"config\", "
                              "\"language\": \"en\"}`. It answers JSON events with `\"speaker\": \"user\"`: "
                              "`listening`, `speech_start`, `partial` (`text` so far), `speech_end`, `final` (the "
                              "recognised `text`, posted to the room as a message like a typed one: `message_id`), "
                              "`barge_in` (the room was interrupted by voice, unless created with `barge_in: false`), "
                              "`error`; plus the room's feed events (with their feed `id`). Silero VAD ends an "
                              "utterance after `MTL_VOICE_END_SILENCE_MS` (500) of silence. Close codes: 4400 bad "
                              "frame, 4401 bad key, 4404 no such room, 4408 no audio for `MTL_VOICE_IDLE_TIMEOUT_S` "
                              "mid-stream, 4409 the room already has a speaker, 4429 audio faster than 2x real time, "
                              "1000 room closed, 1011 room state lost, 1013 too many sockets. Audio is never written to disk.")
    # Added first, so it runs inside CORS and a 401/413 still carries the CORS headers.
    app.add_middleware(Gate, settings=settings)  # access, body kind and size, text: before the body is read
    app.add_middleware(RateLimit, settings=settings)  # outside the gate: a refusal reads no body
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"])
    app.add_middleware(RequestMetrics)  # outermost: every request's latency, refusals included
    install_error_handlers(app)
    app.include_router(metrics_router)
    for module in (health, legacy, tts, asr, jobs, files, avatars, lipsync, rooms, conversations, voice, fleet,
                   live, console, publish):
        app.include_router(module.router)
    app.include_router(conversations.material_router)
    for module in (interviews, feedback):  # each has legacy GET paths beside its /v1 ones
        app.include_router(module.legacy_router)
        app.include_router(module.router)
    console.mount_static(app)
    install_openapi(app)
    return app
