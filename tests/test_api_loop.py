"""The API starts its subprocesses without running Python in the child (api/server.py).

The HTTP-FLV relay starts ffmpeg from the API's event loop while other threads run. A child that runs
Python between fork and exec can wait forever on what another thread held at the fork: under uvloop a
PyAV scaler collected in such a child hung in pthread_cond_destroy, uvloop waited for the child holding
the GIL, and the API (the test's whole process, timeouts included) froze until CI killed it. Python's
at-fork hooks run in exactly those children, so a hook that leaves a mark shows whether one ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port, wait_until
from core.settings import Settings
from test_voice import serving

pytestmark = pytest.mark.timeout(120)

_MARK: dict[str, Path | None] = {"path": None}


def _after_fork_in_child() -> None:
    path = _MARK["path"]
    if path is not None:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


os.register_at_fork(after_in_child=_after_fork_in_child)  # once per test process; idle unless armed


def test_the_flv_relay_starts_ffmpeg_without_python_in_the_child(redis_server, tmp_path):
    # RTMP on a free port: the relay's ffmpeg finds no source and the relay starts it again (backoff).
    settings = Settings(_env_file=None, redis_url=redis_server.url(14), data_dir=tmp_path / "data",
                        models_dir=ROOT / "models", access_mode="open", rtmp_port=free_port())
    mark = tmp_path / "python-ran-in-a-child"
    with serving(settings) as api:
        room = api.room()
        base = api.base.replace("ws://", "http://")
        _MARK["path"] = mark
        try:
            with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=None)) as http:
                with http.stream("GET", f"/live/{room.stream_key}.flv") as response:
                    assert response.status_code == 200, response.read()
                    relays = api.app.state.relays.relays
                    # Two starts: the first child has exec'd (or failed to) and been reaped.
                    wait_until(lambda: room.stream_key in relays and relays[room.stream_key].runs >= 2, 30,
                               interval=0.1, what="the relay to start ffmpeg twice")
        finally:
            _MARK["path"] = None
    assert not mark.exists(), "Python ran in a child the API's loop forked (uvloop's after-fork handler)"
