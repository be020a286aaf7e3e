"""uvicorn's settings for the API: one place for `python -m api` and the tests' in-process API."""

from __future__ import annotations

from typing import Any

import uvicorn

# The standard asyncio loop, not uvloop (uvicorn's default when installed). The API starts ffmpeg from
# its loop (the HTTP-FLV relay) while other threads run. uvloop's fork runs Python in the child before
# the exec (its after-fork handler): anything freed there that waits on another thread's lock or native
# pool never comes back, and uvloop waits for that child holding the GIL, so the whole process froze.
# Seen in `make test`: a PyAV scaler collected in the child, stuck in pthread_cond_destroy, and the API
# (with every timeout in its process) stopped for good. asyncio's subprocesses fork and exec in C
# (_posixsubprocess), with no Python in the child.
LOOP = "asyncio"


def config(app: Any, **options: Any) -> uvicorn.Config:
    """A uvicorn config serving `app` (an app, or an import string with factory=True)."""
    return uvicorn.Config(app, loop=LOOP, **options)
