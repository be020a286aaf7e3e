"""The edges of the fleet (issue 17), in process: the app from api.main.create_app with keys set,
on the session's real redis-server, driven through httpx's ASGI transport, which pulls a request
body only as fast as the app reads it, so a test can count the bytes the app took in.

Unauthenticated bodies are refused before they are read; uploads are cut at the route's cap while
they stream; multipart on a JSON route is 415; control characters and lone surrogates are 422 at
the door, legacy routes included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from api.access import key_owner
from bench.edges import png_bomb
from core.settings import Settings

KEY = "edge-key-0123456789"
MB = 1024 * 1024
CHUNK = 64 * 1024


class Body:
    """A multipart body of `size` bytes made while it is sent; `sent` counts what the app pulled."""

    def __init__(self, size: int, boundary: str = "edgeboundary", field: str = "file") -> None:
        self.size, self.sent = size, 0
        self.head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"big.wav\"\r\n"
                     f"Content-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.content_type = f"multipart/form-data; boundary={boundary}"

    async def __aiter__(self):
        yield self.head
        self.sent += len(self.head)
        left = self.size
        block = b"\0" * CHUNK
        while left > 0:
            piece = block[:min(CHUNK, left)]
            left -= len(piece)
            self.sent += len(piece)
            yield piece
        yield self.tail


def _settings(redis_server, data_dir: Path, **extra) -> Settings:
    return Settings(redis_url=redis_server.url(0), data_dir=data_dir, api_keys=[KEY], rate_limit_enabled=False,
                    max_upload_bytes=2 * MB, max_avatar_upload_bytes=3 * MB, min_free_disk_mb=0, **extra)


@contextlib.asynccontextmanager
async def _client(settings: Settings):
    from api.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


def _run(settings: Settings, scenario):
    async def main():
        async with _client(settings) as client:
            return await scenario(client)

    return asyncio.run(main())


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    got = body["error"]["code"] if isinstance(body.get("error"), dict) else body.get("error")
    assert got == code, body
    return body


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


def test_unauthenticated_bodies_are_refused_unread(redis_server, data_dir, tmp_path, monkeypatch):
    """A 20 MB multipart body with no key, to JSON routes and upload routes alike: 401 after at
    most the first chunk, nothing written under the data directory or the temp directory.
    The temp directory is this test's own (tempfile's default, where spooled uploads go), so the
    other processes of a parallel run, or of the machine, cannot write into what is checked."""
    settings = _settings(redis_server, data_dir)
    own_temp = tmp_path / "temp"
    own_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_temp))
    temp_before = set(os.listdir(tempfile.gettempdir()))

    async def scenario(client):
        pulled = {}
        for path in ("/v1/tts", "/v1/rooms", "/v1/files", "/v1/avatars", "/v1/asr", "/v1/rooms/x/messages"):
            body = Body(20 * MB)
            r = await client.post(path, content=body, headers={"content-type": body.content_type})
            _error(r, 401, "unauthorized")
            pulled[path] = body.sent
        return pulled

    pulled = _run(settings, scenario)
    assert all(sent <= CHUNK + 512 for sent in pulled.values()), pulled
    assert not (data_dir / "uploads").exists() or not _files_under(data_dir / "uploads")
    assert set(os.listdir(tempfile.gettempdir())) - temp_before == set()


def test_uploads_are_cut_at_the_routes_cap_while_streaming(redis_server, data_dir):
    settings = _settings(redis_server, data_dir)

    async def scenario(client):
        out = {}
        for path, cap in (("/v1/files", 2 * MB), ("/v1/avatars", 2 * 3 * MB)):
            body = Body(cap + 4 * MB)  # chunked: no Content-Length to refuse up front
            r = await client.post(path, content=body, headers={"content-type": body.content_type, "X-API-Key": KEY})
            _error(r, 413, "body_too_large")
            assert r.headers.get("connection") == "close"
            out[path] = (body.sent, cap)
        # A declared length over the cap: refused before any byte.
        body = Body(3 * MB)
        r = await client.post("/v1/files", content=body, headers={
            "content-type": body.content_type, "X-API-Key": KEY, "content-length": str(3 * MB + 200)})
        _error(r, 413, "body_too_large")
        out["declared"] = (body.sent, 0)
        return out

    out = _run(settings, scenario)
    for path, (sent, cap) in out.items():
        assert sent <= cap + settings.max_json_bytes + 2 * CHUNK, (path, sent, cap)
    assert out["declared"][0] <= CHUNK + 512
    assert not (data_dir / "uploads").exists() or not _files_under(data_dir / "uploads")


def test_multipart_on_a_json_route_is_415(redis_server, data_dir):
    settings = _settings(redis_server, data_dir)

    async def scenario(client):
        results = []
        for path in ("/v1/tts", "/v1/rooms", "/v1/rooms/x/say"):
            body = Body(MB)
            r = await client.post(path, content=body, headers={"content-type": body.content_type, "X-API-Key": KEY})
            results.append((r, body.sent))
        return results

    for r, sent in _run(settings, scenario):
        _error(r, 415, "unsupported_media_type")
        assert sent <= CHUNK + 512


def test_a_small_upload_with_the_key_still_goes_through(redis_server, data_dir):
    from speech import tone_wav

    settings = _settings(redis_server, data_dir)

    async def scenario(client):
        return await client.post("/v1/files", files={"file": ("tone.wav", tone_wav(1.0))}, headers={"X-API-Key": KEY})

    r = _run(settings, scenario)
    assert r.status_code == 201, r.text
    assert (data_dir / r.json()["file"]).is_file()


def test_control_characters_and_lone_surrogates_are_422_at_the_door(redis_server, data_dir):
    from redis import Redis

    from core.rooms import RoomStore

    settings = _settings(redis_server, data_dir)
    key = {"X-API-Key": KEY}
    store = RoomStore(Redis.from_url(settings.redis_url), settings)
    room = store.create(owner=key_owner(KEY))  # no stream worker here: the room only has to exist

    async def scenario(client):
        out = {}
        out["nul"] = await client.post("/v1/tts", json={"text": "hello\u0000world"}, headers=key)
        # A lone surrogate only travels as a JSON escape (it is not UTF-8).
        out["surrogate"] = await client.post("/v1/tts", content=b'{"text": "a\\ud800b"}',
                                             headers={**key, "content-type": "application/json"})
        out["escape"] = await client.post("/v1/rooms", json={"username": "x\u001bx"}, headers=key)
        out["nested"] = await client.post("/v1/interviews", json={"job": "dev", "questions": ["ok", "\u0007"]},
                                          headers=key)
        out["legacy"] = await client.get("/tts", params={"msg": "\u0000", "key": KEY})
        out["legacy_raw"] = await client.get("/tts?msg=%00&key=" + KEY)
        out["legacy_room"] = await client.get("/create/zbj?username=a%01b&key=" + KEY)
        # Multipart text is checked where the form is read (the gate does not parse uploads).
        out["form_text"] = await client.post(f"/v1/rooms/{room.id}/messages", data={"text": "hi\u0000"},
                                             files={"unused": ("x.txt", b"")}, headers=key)
        out["fine"] = await client.post("/v1/tts", json={"text": "line one\nline two\tand a tab\r\n"}, headers=key)
        return out

    out = _run(settings, scenario)
    for name in ("nul", "surrogate", "escape", "nested"):
        body = _error(out[name], 422, "invalid_text")
        assert "U+" in body["error"]["message"], body
    assert "U+D800" in out["surrogate"].json()["error"]["message"]
    for name in ("legacy", "legacy_raw", "legacy_room"):
        body = _error(out[name], 422, "invalid_text")
        assert body["message"], body  # the legacy shape keeps `message`
    _error(out["form_text"], 422, "invalid_text")
    store.close(room.id)
    assert out["fine"].status_code == 202, out["fine"].text


def test_every_multipart_route_is_capped(redis_server, data_dir):
    """The routes OpenAPI documents with a multipart body are exactly the gate's upload routes."""
    from api.gate import UPLOAD_LIMITS
    from api.main import create_app

    schema = create_app(_settings(redis_server, data_dir)).openapi()
    documented = {(method.upper(), path) for path, item in schema["paths"].items() for method, op in item.items()
                  if "multipart/form-data" in json.dumps(op.get("requestBody", {}))}
    assert documented == set(UPLOAD_LIMITS)


# ---- header checks before decoders; ffmpeg/ffprobe bounded ----

@pytest.mark.parametrize("side", [16000, 20000])
def test_picture_bombs_are_refused_from_the_header(redis_server, data_dir, tmp_path, side):
    """16000x16000 cost ffprobe 802 MB before check_pixels; 20000x20000 probed as 0x0 and was accepted."""
    settings = _settings(redis_server, data_dir)
    bomb = png_bomb(tmp_path / "portrait.png", side)

    async def scenario(client):
        return await client.post("/v1/avatars", files={"file": ("portrait.png", bomb.read_bytes())},
                                 headers={"X-API-Key": KEY})

    _error(_run(settings, scenario), 422, "image_too_large")
    assert not [p for p in _files_under(data_dir) if "uploads" in p.parts]


def test_media_tools_get_no_stdin_and_bounded_memory(tmp_path):
    """Every ffmpeg/ffprobe the service starts: stdin /dev/null (under supervisord the API's stdin is
    its listening socket) and RLIMIT_AS; seen on the real child process in /proc."""
    import threading

    from core.media import MEDIA_MAX_MEMORY_BYTES, run_ffmpeg

    seen = {}

    def watch():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and (proc / "comm").read_text().strip() == "ffmpeg" and \
                            int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        seen["stdin"] = os.readlink(proc / "fd" / "0")
                        seen["limits"] = (proc / "limits").read_text()
                except (OSError, ValueError, IndexError):
                    continue
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_ffmpeg(["-re", "-f", "lavfi", "-i", "sine=d=1.5", "-f", "null", "-"])
    watcher.join()
    assert seen.get("stdin") == "/dev/null", seen
    line = next(l for l in seen["limits"].splitlines() if l.startswith("Max address space"))
    assert line.split()[3] == str(MEDIA_MAX_MEMORY_BYTES), line
