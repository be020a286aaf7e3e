"""API latency per route template (Prometheus) and GET /metrics for the whole fleet (core/metrics.py)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import require_legacy_access
from core import metrics


class RequestMetrics:
    """Times every HTTP request; labelled by the route's path template (``/v1/jobs/{job_id}``), never
    the raw path, so ids do not multiply the series. Unmatched paths share one label."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            if template == "/live/{stream_key}.flv":  # endless responses: their length is not latency
                return
            metrics.observe_request(scope.get("method", ""), template, status, time.perf_counter() - started)


# Scrapers send no headers: like legacy GETs, /metrics takes ?key= or an allowed address when keys are on.
router = APIRouter(tags=["health"], dependencies=[Depends(require_legacy_access)])


@router.get("/metrics", summary="Prometheus metrics of every process of the fleet",
            responses={200: {"content": {"text/plain": {}}}}, response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    body, content_type = await run_in_threadpool(metrics.render, request.app.state.redis)
    return Response(body, media_type=content_type)
