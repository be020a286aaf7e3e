"""`/console`: the operators' web console (plain HTML/JS/CSS under api/static/console).

The page talks to the `/v1` API only, with the API key typed once and kept in the browser session.
Its one third-party script, mpegts.js (HTTP-FLV playback), is vendored into api/static/vendor at
install time (`make`), so nothing is loaded from the internet and no Node.js runs with the service.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
CONSOLE_DIR = STATIC / "console"
VENDOR_DIR = STATIC / "vendor"

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def console_root() -> RedirectResponse:
    # The page's relative asset paths need the trailing slash.
    return RedirectResponse("/console/", status_code=307)


def mount_static(app: FastAPI) -> None:
    # check_dir=False: the vendored files appear at install time; a missing one is a 404, which
    # the page reports in plain words instead of failing to start the API.
    app.mount("/console/vendor", StaticFiles(directory=VENDOR_DIR, check_dir=False), name="console-vendor")
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
