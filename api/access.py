"""Who is calling: API keys (constant-time), the address allow-list, and ownership of avatars and rooms.

Modes (``MTL_ACCESS_MODE``, see core/settings.py):

* ``open``: anyone; every caller is an anonymous administrator (the API logs a warning at start).
* ``keys``: ``/v1`` needs ``X-API-Key`` or ``Authorization: Bearer``; legacy GETs and file downloads,
  whose clients often cannot send headers, also take ``?key=`` or an address in ``MTL_ALLOWED_ADDRESSES``.
* ``allowlist``: an address in ``MTL_ALLOWED_ADDRESSES`` everywhere, or a valid key.

A caller with a key is known by a hash of it (:func:`key_owner`), never the key: avatars and rooms
store that hash as their owner. Resources without an owner (made while the service was open, or by
an allow-listed address) are shared; built-ins (the demo avatar, the default room) are read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer

from api.errors import ApiError
from core.settings import Settings

log = logging.getLogger(__name__)

# Declared as security schemes, so /openapi.json (and /docs) show how to authenticate.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (MTL_API_KEYS)")
bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")
api_key_query = APIKeyQuery(name="key", auto_error=False,
                            description="legacy GETs and file downloads only: the API key in the query string")


@dataclass(frozen=True)
class Caller:
    owner: str | None  # hash of the caller's key; None: anonymous (open service or an allowed address)
    admin: bool

    def may_use(self, owner: str | None) -> bool:
        """Whether this caller may see and change a resource owned by `owner` (None: shared)."""
        return self.admin or owner is None or owner == self.owner


OPEN = Caller(owner=None, admin=True)


def key_owner(key: str) -> str:
    """The owner id stored with a key's resources: a one-way hash, never the key itself."""
    return hashlib.sha256(b"musetalk-live owner:" + key.encode()).hexdigest()[:32]


def key_in(token: str, keys: list[str]) -> bool:
    """Constant-time membership: every configured key is compared, with hmac.compare_digest."""
    found = False
    raw = token.encode()
    for key in keys:
        found |= hmac.compare_digest(raw, key.encode())
    return found


@lru_cache(maxsize=32)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            log.error("MTL_ALLOWED_ADDRESSES: ignoring %r, not an address or CIDR", cidr)
    return tuple(nets)


def address_allowed(settings: Settings, host: str | None) -> bool:
    if not host or not settings.allowed_addresses:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in _networks(tuple(settings.allowed_addresses)))


def token_from_headers(scope, legacy: bool) -> str | None:
    """The key a request carries, read from its headers (and ``?key=`` on legacy routes) as the
    route dependencies (api/deps.py) read it: for checks made before FastAPI parses anything."""
    from starlette.datastructures import Headers, QueryParams

    headers = Headers(scope=scope)
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    token = headers.get("x-api-key") or (credentials.strip() if scheme.lower() == "bearer" else None)
    if not token and legacy:
        token = QueryParams(scope.get("query_string", b"")).get("key")
    return token or None


def resolve_caller(request: Request, settings: Settings, token: str | None, legacy: bool) -> Caller:
    mode = settings.effective_access_mode
    if mode == "open":
        return OPEN
    if token:
        if key_in(token, settings.admin_keys):
            return Caller(owner=key_owner(token), admin=True)
        if key_in(token, settings.api_keys):
            return Caller(owner=key_owner(token), admin=False)
        raise ApiError(401, "unauthorized", "missing or invalid API key")
    if (mode == "allowlist" or legacy) and address_allowed(settings, request.client.host if request.client else None):
        return Caller(owner=None, admin=False)
    raise ApiError(401, "unauthorized", "missing or invalid API key")


def warn_if_open(settings: Settings) -> None:
    mode = settings.effective_access_mode
    if mode != "open" and not (settings.api_keys or settings.admin_keys) and not settings.allowed_addresses:
        log.error("MTL_ACCESS_MODE=%s with no keys and no allowed addresses: every protected request is refused", mode)
    if mode == "open":
        log.warning("!" * 72)
        log.warning("ACCESS IS OPEN: anyone who reaches this API may use, change and delete everything. "
                    "Set MTL_API_KEYS (and MTL_ACCESS_MODE=keys) or MTL_ACCESS_MODE=allowlist with "
                    "MTL_ALLOWED_ADDRESSES before exposing it.")
        log.warning("!" * 72)
