"""Typed dependencies: settings, Redis connections and the access check (api/access.py).

All async: FastAPI runs plain `def` dependencies in its thread pool, a hop per dependency per
request that dominated the cost of a status read under load."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from redis import Redis

from api.access import Caller, api_key_header, api_key_query, bearer, resolve_caller
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


async def require_api_key(request: Request, settings: SettingsDep,
                          x_api_key: Annotated[str | None, Security(api_key_header)] = None,
                          authorization: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
                          ) -> Caller:
    """/v1: a key in a header (or, in allowlist mode, an allowed address); the caller it names."""
    token = x_api_key or (authorization.credentials if authorization else None)
    return resolve_caller(request, settings, token, legacy=False)


async def require_legacy_access(request: Request, settings: SettingsDep,
                                x_api_key: Annotated[str | None, Security(api_key_header)] = None,
                                authorization: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
                                key: Annotated[str | None, Security(api_key_query)] = None) -> Caller:
    """Legacy GETs and file downloads: a header, ``?key=``, or an address in MTL_ALLOWED_ADDRESSES."""
    token = x_api_key or (authorization.credentials if authorization else None) or key
    return resolve_caller(request, settings, token, legacy=True)


CallerDep = Annotated[Caller, Depends(require_api_key)]
LegacyCallerDep = Annotated[Caller, Depends(require_legacy_access)]


def websocket_caller(websocket, settings: Settings) -> Caller:
    """The WebSocket handshake's caller: a key in X-API-Key, a Bearer header, or ``?key=`` (browsers
    cannot set headers on a WebSocket), as for legacy downloads."""
    auth = websocket.headers.get("authorization", "")
    token = (websocket.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else None)
             or websocket.query_params.get("key"))
    return resolve_caller(websocket, settings, token, legacy=False)
