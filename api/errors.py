"""The API's own error type, the HTTP status of each domain error (core/errors.py), and the
handlers that shape both per path family.

Legacy paths answer ``{"message": ..., "error": code}`` (old clients read ``message``);
``/v1`` answers ``{"error": {"code", "message", ...}}``. Never an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (Conflict, DomainError, Failed, Forbidden, Invalid, Missing, NotFound, NotReady, TooLarge,
                         Unavailable, UpstreamFailed)
from core.limits import Refused, Shortage

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


# The one place a domain error gets an HTTP status; the most specific class listed wins.
DOMAIN_STATUS: dict[type[DomainError], int] = {Missing: 400, Forbidden: 403, NotFound: 404, Conflict: 409,
                                               TooLarge: 413, Invalid: 422, Failed: 500, UpstreamFailed: 502,
                                               Unavailable: 503, NotReady: 504}


def domain_status(exc: DomainError) -> int:
    return next((DOMAIN_STATUS[cls] for cls in type(exc).__mro__ if cls in DOMAIN_STATUS), 422)


# ... and of a refusal of new work (core/limits.py), by what ran out.
SHORTAGE_STATUS: dict[Shortage, int] = {Shortage.BUSY: 429, Shortage.UNAVAILABLE: 503, Shortage.STORAGE_FULL: 507}


def _is_v1(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def error_response(request: Request, status: int, code: str, message: str, *,
                   headers: dict[str, str] | None = None, **details: Any) -> JSONResponse:
    if _is_v1(request):
        body: dict[str, Any] = {"error": {"code": code, "message": message, **details}}
    else:
        body = {"message": message, "error": code, **details}
    return JSONResponse(body, status_code=status, headers=headers)


def refused_response(request: Request, exc: Refused) -> JSONResponse:
    """429/503/507 with Retry-After (also in the body, as retry_after_s)."""
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    extra = {"retry_after_s": exc.retry_after_s} if exc.retry_after_s else {}
    return error_response(request, SHORTAGE_STATUS[exc.kind], exc.code, exc.message, headers=headers, **extra,
                          **exc.details)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.code, exc.message, **exc.details)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError):
        return error_response(request, domain_status(exc), exc.code, exc.message, **exc.details)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        return refused_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        missing = all(err.get("type") == "missing" for err in exc.errors())
        return error_response(request, 400 if missing else 422, "missing_parameter" if missing else "invalid_input",
                              "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", "internal error; see the server log")
