"""The door of every HTTP request: who is calling and what body may follow are decided from the
request line and headers before a byte of the body is read.

In order, each refusal a JSON error of the path's family (legacy routes keep ``message``):

1. **Access** (401): a route that depends on ``require_api_key`` or ``require_legacy_access``
   (found in the route's own dependencies, so the gate and the route can never disagree) gets the
   same check here from the headers (and ``?key=`` / the address on legacy routes). Without it,
   FastAPI parsed the whole body (200 MB of multipart spooled to disk) before the dependency ran.
2. **Body kind** (415): multipart only on the routes listed in ``UPLOAD_LIMITS``.
3. **Body size** (413): each route's own cap, ``max_json_bytes`` unless it takes uploads; a
   declared Content-Length over it is refused unread, a chunked body is counted while it streams
   and cut at the cap (the parser's spooled parts are closed and deleted with it).
4. **Text** (422 ``invalid_text``): the path, every query value and every string of a JSON (or
   urlencoded) body, for control characters and lone surrogates (core/text.py). Multipart text
   fields are checked where they are read.

A refusal that leaves body bytes unread says ``Connection: close``, so the server drops the
connection instead of reading and discarding the rest.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access import resolve_caller, token_from_headers
from api.deps import require_api_key, require_legacy_access
from api.errors import ApiError, domain_status, error_response
from core.errors import DomainError
from core.settings import Settings
from core.text import check_text, check_tree

log = logging.getLogger(__name__)

# Routes that take multipart uploads, and the settings that bound each of their files; the form's
# text fields ride within one more max_json_bytes. Every other route is JSON (or no body) only.
UPLOAD_LIMITS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/files"): ("max_upload_bytes",),
    ("POST", "/v1/asr"): ("max_upload_bytes",),
    ("POST", "/v1/lipsync/upload"): ("max_upload_bytes",),
    ("POST", "/v1/rooms/{room_ref}/messages"): ("max_upload_bytes",),
    ("POST", "/v1/avatars"): ("max_avatar_upload_bytes", "max_avatar_upload_bytes"),  # file + speech sample
    ("POST", "/v1/feedback"): ("max_avatar_upload_bytes",),
    ("PUT", "/v1/rooms/{room_ref}/material"): ("max_material_bytes",),  # a CSV or JSON sheet
    ("POST", "/v1/material/check"): ("max_material_bytes",),  # the same, checked before a room exists
}


@dataclass(frozen=True)
class Policy:
    access: str | None  # "v1", "legacy" or None (public)
    multipart: bool
    max_bytes: int


class BodyTooLarge(Exception):
    """Raised from receive() when a streaming body passes its cap; the gate answers 413."""


def _dependency_calls(dependant) -> set:
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= _dependency_calls(sub)
    return calls


def route_policy(context, settings: Settings) -> Policy:
    """`context`: a FastAPI route context (full path, methods, dependant), see iter_route_contexts."""
    calls = _dependency_calls(context.dependant)
    access = "v1" if require_api_key in calls else "legacy" if require_legacy_access in calls else None
    uploads = next((UPLOAD_LIMITS[(m, context.path)] for m in sorted(context.methods or ())
                    if (m, context.path) in UPLOAD_LIMITS), None)
    if uploads is None:
        return Policy(access, False, settings.max_json_bytes)
    return Policy(access, True, sum(int(getattr(settings, name)) for name in uploads) + settings.max_json_bytes)


def route_table(app, settings: Settings) -> list[tuple[re.Pattern, frozenset[str], Policy]]:
    """(path regex, methods, policy) of every API route, included routers flattened."""
    return [(context.path_regex, frozenset(context.methods or ()), route_policy(context, settings))
            for context in iter_route_contexts(app.routes) if isinstance(context.original_route, APIRoute)]


class Gate:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._table: list[tuple[re.Pattern, frozenset[str], Policy]] | None = None

    def _policy(self, scope: Scope) -> Policy:
        if self._table is None:  # built at the first request: every router is included by then
            self._table = route_table(scope["app"], self.settings)
        path, method = scope.get("path", ""), scope.get("method", "")
        for regex, methods, policy in self._table:
            if method in methods and regex.match(path):
                return policy
        return Policy(None, False, self.settings.max_json_bytes)  # 404/405 follow; no body wanted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        policy = self._policy(scope)
        try:
            self._check_door(scope, headers, policy)
        except (ApiError, DomainError) as exc:
            # A body left unread: the connection is closed rather than the rest read and thrown away.
            unread = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
            await self._refuse(scope, receive, send, exc, close=unread)
            return
        if policy.multipart and headers.get("content-type", "").startswith("multipart/form-data"):
            await self._stream(scope, receive, send, policy.max_bytes)
            return
        body = await self._read_small(scope, receive, send, policy.max_bytes)
        if body is None:
            return
        try:
            _check_body_text(headers.get("content-type", ""), body)
        except DomainError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_door(self, scope: Scope, headers: Headers, policy: Policy) -> None:
        """Everything decided from the request line and headers: access, body kind, declared size, text."""
        if policy.access is not None:
            legacy = policy.access == "legacy"
            resolve_caller(Request(scope), self.settings, token_from_headers(scope, legacy), legacy=legacy)
        if headers.get("content-type", "").startswith("multipart/form-data") and not policy.multipart:
            raise ApiError(415, "unsupported_media_type", "this route takes a JSON body, not multipart/form-data")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise _too_large(policy.max_bytes)
        check_text(scope.get("path", ""), "path")
        for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            check_text(name, "query")
            check_text(value, name)

    async def _read_small(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> bytes | None:
        """A non-multipart body, whole (JSON is parsed whole anyway), or None after a 413."""
        chunks, size, more = [], 0, True
        while more:  # a chunked body has no Content-Length: count while reading
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > max_bytes:
                await self._refuse(scope, receive, send, _too_large(max_bytes), close=True)
                return None
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        """An upload, passed on as it arrives and cut at `max_bytes`: whatever the app answers
        after the cut (FastAPI turns the error into a 400) is replaced by the 413."""
        size, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal size, over
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > max_bytes:
                    over = True
                    raise BodyTooLarge()
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(scope, receive, send, _too_large(max_bytes), close=True)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: ApiError | DomainError,
                      close: bool = False) -> None:
        status = exc.status if isinstance(exc, ApiError) else domain_status(exc)
        log.info("refused %s %s at the door: %d %s", scope.get("method"), scope.get("path"), status, exc.code)
        response = error_response(Request(scope), status, exc.code, exc.message,
                                  headers={"Connection": "close"} if close else None, **exc.details)
        await response(scope, receive, send)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body larger than {max_bytes} bytes")


def _check_body_text(content_type: str, body: bytes) -> None:
    """Strings of a JSON or urlencoded body; anything unparsable is left for the route to refuse."""
    if not body:
        return
    if content_type.startswith("application/x-www-form-urlencoded"):
        for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            check_text(name, "form")
            check_text(value, name)
        return
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return
    check_tree(document)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the real channel (for disconnect notices)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
