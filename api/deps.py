"""Typed dependencies: settings, Redis connections and the API-key check.

All async: FastAPI runs plain `def` dependencies in its thread pool, a hop per dependency per
request that dominated the cost of a status read under load."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Header, Request
from redis import Redis

from api.errors import ApiError
from core.settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> Redis:
    return request.app.state.redis


async def get_aredis(request: Request) -> aioredis.Redis:
    return request.app.state.aredis


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
ARedisDep = Annotated[aioredis.Redis, Depends(get_aredis)]


async def require_api_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None,
                    authorization: Annotated[str | None, Header()] = None) -> None:
    if not settings.api_keys:
        return
    token = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
    if token not in settings.api_keys:
        raise ApiError(401, "unauthorized", "missing or invalid API key")
