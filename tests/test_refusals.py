"""Refused new work reads the same on the wire while core/ says only what ran out (core/limits.py
`Shortage`), and the API alone picks the status: busy 429, unavailable 503, storage full 507, each
with Retry-After. The app runs in-process against a real redis-server with no workers, so what is
queued stays queued; a static check keeps HTTP statuses out of core/ and workers/ errors."""

from __future__ import annotations

import ast

from redis import Redis

from conftest import ROOT
from test_keys import _sources
from test_ownership import _avatar, build_app


def _client(redis_server, tmp_path_factory, db: int, **limits):
    from fastapi.testclient import TestClient

    from core.settings import Settings

    settings = Settings(_env_file=None, redis_url=redis_server.url(db), data_dir=tmp_path_factory.mktemp("refusals"),
                        rate_limit_enabled=False, **limits)
    Redis.from_url(settings.redis_url).flushdb()
    _avatar(settings, settings.demo_avatar_id)
    return TestClient(build_app(settings))




def _refused(r, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert int(r.headers["Retry-After"]) > 0
    body = r.json()  # /v1: {"error": {"code", ...}}; legacy paths: {"message", "error": code}
    assert (body["error"]["code"] if isinstance(body["error"], dict) else body["error"]) == code, body
    return body


def test_a_full_queue_is_busy_429(redis_server, tmp_path_factory):
    with _client(redis_server, tmp_path_factory, 9, min_free_disk_mb=0, tts_max_queued=2) as caps:
        _full_queue(caps)


def _full_queue(caps) -> None:
    for _ in range(2):
        assert caps.post("/v1/tts", json={"text": "queued"}).status_code == 202
    body = _refused(caps.post("/v1/tts", json={"text": "one too many"}), 429, "queue_full")
    assert body["error"]["queue"] == "tts" and body["error"]["limit"] == 2


def test_rooms_beyond_the_cap_are_unavailable_503_and_a_full_room_busy_429(redis_server, tmp_path_factory):
    with _client(redis_server, tmp_path_factory, 9, min_free_disk_mb=0, max_open_rooms=1,
                 max_utterances_per_room=1) as caps:
        room = caps.post("/v1/rooms", json={}).json()
        _refused(caps.post("/v1/rooms", json={}), 503, "too_many_rooms")
        assert caps.post(f"/v1/rooms/{room['id']}/say", json={"text": "first"}).status_code == 202
        _refused(caps.post(f"/v1/rooms/{room['id']}/say", json={"text": "second"}), 429, "room_queue_full")
        assert caps.delete(f"/v1/rooms/{room['id']}").status_code == 204


def test_a_full_disk_is_507_on_v1_and_on_legacy_paths(redis_server, tmp_path_factory):
    with _client(redis_server, tmp_path_factory, 10, min_free_disk_mb=1 << 40) as client:
        body = _refused(client.post("/v1/tts", json={"text": "no room on disk"}), 507, "insufficient_storage")
        assert body["error"]["required_mb"] == 1 << 40
        legacy = _refused(client.get("/tts", params={"msg": "no room on disk"}), 507, "insufficient_storage")
        assert legacy["message"]  # old clients read `message`


def test_every_shortage_has_one_status():
    from api.errors import SHORTAGE_STATUS
    from core.limits import Shortage

    assert set(SHORTAGE_STATUS) == set(Shortage)


def test_core_and_worker_errors_carry_no_http_status():
    """No exception class of core/ or workers/ takes a status, and no error is made with an HTTP
    status number: the API maps domain errors and shortages (api/errors.py)."""
    found = []
    for path, tree in _sources("core", "workers"):
        where = path.relative_to(ROOT)
        classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                names = {a.arg for a in node.args.args + node.args.kwonlyargs}
                if names & {"status", "status_code", "http_status"}:
                    found.append(f"{where}:{node.lineno}: __init__ takes an HTTP status")
            name = ast.unparse(node.func).split(".")[-1] if isinstance(node, ast.Call) else ""
            if name in classes or name.endswith(("Error", "Refused", "Exception")):
                numbers = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, int)]
                if any(400 <= n < 600 for n in numbers):
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not found, "HTTP statuses in core/ or workers/ errors:\n" + "\n".join(found)
