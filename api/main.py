"""The FastAPI application factory (no module-level app state)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.errors import install_error_handlers
from api.routers import asr, avatars, files, health, jobs, legacy, lipsync, rooms, tts
from core.jobs import redis_connection
from core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.redis = redis_connection(settings)
        # Bounded and blocking: a burst of requests waits for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, password=settings.redis_password,
                                                        max_connections=settings.api_redis_connections, timeout=10)
        app.state.aredis = aioredis.Redis(connection_pool=pool)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        yield
        app.state.redis.close()
        await app.state.aredis.aclose()

    app = FastAPI(title="musetalk-live", version="0.1.0", lifespan=lifespan,
                  description="Talking digital humans for live rooms: TTS, ASR, lip-sync and live streams. "
                              "Legacy GET endpoints keep the old service's contracts; new features live under /v1.")
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"])
    install_error_handlers(app)
    for module in (health, legacy, tts, asr, jobs, files, avatars, lipsync, rooms):
        app.include_router(module.router)
    return app
