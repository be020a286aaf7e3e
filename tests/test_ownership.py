"""Every route decides who may read, use and change what it names: generated from the app's own
route table, so a new route without a decision here fails.

For each route with a resource in its path or body, tenant A makes it, tenant B gets 404 (403 where
the contract says so: re-preparing another key's avatar id), the admin key succeeds, and A's own
access is unchanged. The app runs in-process against a real redis-server (its own database) and
real ffprobe, with no workers: what a worker would finish (a rendered file, a feedback row) is
written the way the worker writes it (the file under the data directory, the row through
core.feedback.db)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from redis import Redis

from speech import tone_wav

KEY_A, KEY_B, ADMIN = "tenant-a-0123456789", "tenant-b-0123456789", "admin-key-0123456789"
H = {who: {"X-API-Key": key} for who, key in (("A", KEY_A), ("B", KEY_B), ("admin", ADMIN))}
Q = {"A": KEY_A, "B": KEY_B, "admin": ADMIN}  # ?key= of legacy routes and downloads


def build_app(settings):
    """The app, without leaving this process pointed at a multiprocess metrics directory (create_app
    sets PROMETHEUS_MULTIPROC_DIR; fleets started later in the session inherit the environment)."""
    from api.main import create_app
    from core.metrics import ENV

    before = os.environ.get(ENV)
    try:
        return create_app(settings)
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def route_table(app) -> list[str]:
    """"METHOD path" of every route the app serves (mounts as "MOUNT path", WebSockets as "WS path")."""
    try:
        from fastapi.routing import iter_route_contexts
        contexts = list(iter_route_contexts(app.routes))
    except ImportError:  # FastAPI before included routers were kept lazily
        contexts = app.routes
    out = []
    for route in contexts:
        kind = type(getattr(route, "original_route", route)).__name__
        if kind == "Mount":
            out.append(f"MOUNT {route.path}")
        elif "WebSocket" in kind:
            out.append(f"WS {route.path}")
        else:
            out += [f"{m} {route.path}" for m in sorted(route.methods - {"HEAD"})]
    return sorted(set(out))


def _routes() -> list[str]:
    from core.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        return route_table(build_app(Settings(_env_file=None, data_dir=Path(tmp))))


ROUTES = _routes()

# ---- the decisions ----

# Routes that name nothing a tenant owns, and why.
NO_RESOURCE = {
    "GET /openapi.json": "the API's description",
    "GET /docs": "the API's description",
    "GET /docs/oauth2-redirect": "the API's description",
    "GET /redoc": "the API's description",
    "GET /healthz": "liveness",
    "GET /readyz": "readiness: counts of workers",
    "GET /console": "the console's page (it asks for a key itself)",
    "MOUNT /console": "the console's static files",
    "MOUNT /console/vendor": "the console's vendored player",
    "GET /live/{name}": "the stream key is the audience's capability, like the media server's URLs",
    "GET /live/{stream_key}/state": "the audience page's live/speaking/offline, by the same stream key",
    "POST /internal/media/publish": "the media server's publish check: answers only whether a secret is a room's",
    "POST /v1/material/check": "reads the caller's own file and answers it checked; stores and reads nothing else",
}
CHECKS: dict[str, Callable] = {}


def decides(*routes: str):
    def register(check):
        for route in routes:
            assert route not in CHECKS, route
            CHECKS[route] = check
        return check
    return register


# ---- the world: two tenants and an admin, with what A made ----

@dataclass
class World:
    client: object
    settings: object
    redis: Redis
    made: dict = field(default_factory=dict)

    def call(self, who: str, method: str, path: str, legacy: bool = False, **kw):
        if legacy:
            kw["params"] = {**kw.get("params", {}), "key": Q[who]}
        else:
            kw["headers"] = {**kw.get("headers", {}), **H[who]}
        return self.client.request(method, path, **kw)

    def write_output(self, ref: str, data: bytes) -> None:
        """What a worker would have written for a job (its file under the data directory)."""
        path = self.settings.data_dir / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def refused(r, code: str | None = None, status: int = 404) -> None:
    assert r.status_code == status, (r.request.method, str(r.request.url), r.status_code, r.text)
    if code is not None:
        body = r.json()
        assert (body["error"]["code"] if isinstance(body.get("error"), dict) else body["error"]) == code, body


def allowed(r, *statuses: int) -> dict:
    assert r.status_code in statuses, (r.request.method, str(r.request.url), r.status_code, r.text)
    return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else {}


def _avatar(settings, avatar_id: str) -> None:
    """A prepared avatar's files as the avatar worker leaves them (manifest, first frame, landmarks)."""
    from PIL import Image

    path = settings.data_dir / "avatars" / avatar_id
    (path / "frames").mkdir(parents=True, exist_ok=True)
    (path / "avatar.json").write_text(json.dumps({"id": avatar_id, "width": 64, "height": 64, "fps": 25,
                                                  "created_at": 1.0, "source_sha256": avatar_id}))
    Image.new("RGB", (64, 64), (200, 150, 120)).save(path / "frames" / "000000.jpg")
    np.save(path / "landmarks.npy", np.full((1, 478, 3), 32.0, dtype=np.float32))


def _video(tmp: Path) -> bytes:
    out = tmp / "answer.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
                    "-t", "1", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out.read_bytes()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (180, 140, 110)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(redis_server, tmp_path_factory):
    from fastapi.testclient import TestClient

    from api.access import key_owner
    from api.services.avatars import OWNERS
    from core.settings import Settings

    data_dir = tmp_path_factory.mktemp("ownership")
    settings = Settings(_env_file=None, redis_url=redis_server.url(7), data_dir=data_dir, api_keys=[KEY_A, KEY_B],
                        admin_keys=[ADMIN], legacy_wait_s=0, legacy_asr_wait_s=0, interview_clip_wait_s=0,
                        max_open_rooms=100, min_free_disk_mb=0, rate_limit_enabled=False)
    redis = Redis.from_url(settings.redis_url)
    redis.flushdb()
    _avatar(settings, settings.demo_avatar_id)  # built in: everyone's
    for avatar_id in ("av-a", "av-a-admin"):
        _avatar(settings, avatar_id)
        redis.hset(OWNERS, avatar_id, key_owner(KEY_A))
    with TestClient(build_app(settings)) as client:
        w = World(client=client, settings=settings, redis=redis)
        wav = tone_wav(1.5)
        for who in ("A", "B"):
            r = w.call(who, "POST", "/v1/files", files={"file": ("speech.wav", wav, "audio/wav")})
            w.made[f"audio_{who}"] = allowed(r, 201)["file"]
            r = w.call(who, "POST", "/v1/rooms", json={"username": f"tenant_{who}", "ttl_s": 600})
            w.made[f"room_{who}"] = allowed(r, 201)
        w.made["wav"], w.made["video"] = wav, _video(data_dir)
        yield w
    redis.flushdb()


def only_a_reads_file(w: World, ref: str) -> None:
    """B cannot download A's file by either name; A and the admin get its bytes."""
    name = ref.split("/", 1)[1]
    refused(w.call("B", "GET", f"/v1/files/{ref}"))
    refused(w.call("B", "GET", f"/v1/files/{ref}", legacy=True))
    refused(w.call("B", "GET", f"/tests/{name}", legacy=True))
    for who in ("A", "admin"):
        assert w.call(who, "GET", f"/v1/files/{ref}").content[:4] == b"RIFF"
        assert w.call(who, "GET", f"/tests/{name}", legacy=True).content[:4] == b"RIFF"


def job_input(w: World, job_id: str, name: str = "source") -> str:
    """A job's input file reference, as the worker will read it."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    return Job.fetch(job_id, connection=w.redis, serializer=JSONSerializer).kwargs[name]


def _tts_job(w: World, who: str = "A") -> str:
    return allowed(w.call(who, "POST", "/v1/tts", json={"text": "Only mine."}), 202)["job_id"]


# ---- jobs ----

@decides("POST /v1/tts", "GET /v1/jobs/{job_id}")
def check_tts_job(w: World) -> None:
    job_id = _tts_job(w)
    refused(w.call("B", "GET", f"/v1/jobs/{job_id}"), "unknown_job")
    assert allowed(w.call("A", "GET", f"/v1/jobs/{job_id}"), 200)["status"] == "queued"
    allowed(w.call("admin", "GET", f"/v1/jobs/{job_id}"), 200)
    # the speech the job writes is A's too (recorded when it was enqueued)
    w.write_output(f"tts/{job_id}.wav", w.made["wav"])
    only_a_reads_file(w, f"tts/{job_id}.wav")


@decides("DELETE /v1/jobs/{job_id}")
def check_cancel(w: World) -> None:
    job_id = _tts_job(w)
    refused(w.call("B", "DELETE", f"/v1/jobs/{job_id}"), "unknown_job")
    assert allowed(w.call("A", "GET", f"/v1/jobs/{job_id}"), 200)["status"] == "queued"  # untouched
    assert allowed(w.call("admin", "DELETE", f"/v1/jobs/{job_id}"), 200)["status"] == "canceled"
    other = _tts_job(w)
    assert allowed(w.call("A", "DELETE", f"/v1/jobs/{other}"), 200)["status"] == "canceled"


@decides("GET /v1/fleet")
def check_fleet(w: World) -> None:
    job_id = _tts_job(w)
    seen = {who: {j["id"] for j in allowed(w.call(who, "GET", "/v1/fleet", params={"recent": 100}), 200)["recent_jobs"]}
            for who in ("A", "B", "admin")}
    assert job_id in seen["A"] and job_id not in seen["B"] and job_id in seen["admin"]


@decides("POST /v1/asr")
def check_asr(w: World) -> None:
    refused(w.call("B", "POST", "/v1/asr", data={"source": w.made["audio_A"]}), "file_not_owned")
    job_id = allowed(w.call("A", "POST", "/v1/asr", data={"source": w.made["audio_A"]}), 202)["job_id"]
    refused(w.call("B", "GET", f"/v1/jobs/{job_id}"))
    allowed(w.call("admin", "POST", "/v1/asr", data={"source": w.made["audio_A"]}), 202)
    w.write_output(f"asr/{job_id}.json", b'{"text": "secret"}')
    refused(w.call("B", "GET", f"/v1/files/asr/{job_id}.json"))
    allowed(w.call("A", "GET", f"/v1/files/asr/{job_id}.json"), 200)


# ---- files ----

@decides("POST /v1/files", "GET /v1/files/{kind}/{name}", "GET /tests/{name}")
def check_files(w: World) -> None:
    only_a_reads_file(w, w.made["audio_A"])


# ---- avatars ----

@decides("POST /v1/avatars")
def check_avatar_create(w: World) -> None:
    r = w.call("A", "POST", "/v1/avatars", files={"file": ("me.png", _png(), "image/png")})
    made = allowed(r, 202)
    source = job_input(w, made["job_id"])
    refused(w.call("B", "POST", "/v1/avatars", data={"source": source}), "file_not_owned")  # A's upload as input
    refused(w.call("B", "GET", f"/v1/jobs/{made['job_id']}"))
    refused(w.call("B", "POST", "/v1/avatars", data={"avatar_id": "av-a", "source": source}), "not_owner", 403)
    allowed(w.call("admin", "POST", "/v1/avatars", data={"source": source}), 202)
    allowed(w.call("A", "GET", f"/v1/jobs/{made['job_id']}"), 200)


@decides("GET /v1/avatars")
def check_avatar_list(w: World) -> None:
    ids = {who: {a["id"] for a in allowed(w.call(who, "GET", "/v1/avatars"), 200)} for who in ("A", "B", "admin")}
    assert "av-a" in ids["A"] and "av-a" not in ids["B"] and "av-a" in ids["admin"] and "demo" in ids["B"]


@decides("GET /v1/avatars/{avatar_id}", "GET /v1/avatars/{avatar_id}/image", "GET /v1/avatars/{avatar_id}/face")
def check_avatar_reads(w: World) -> None:
    for tail in ("", "/image", "/face"):
        refused(w.call("B", "GET", f"/v1/avatars/av-a{tail}"), "unknown_avatar")
        for who in ("A", "admin"):
            allowed(w.call(who, "GET", f"/v1/avatars/av-a{tail}"), 200)


@decides("DELETE /v1/avatars/{avatar_id}")
def check_avatar_delete(w: World) -> None:
    refused(w.call("B", "DELETE", "/v1/avatars/av-a-admin"), "unknown_avatar")
    allowed(w.call("admin", "DELETE", "/v1/avatars/av-a-admin"), 204)
    allowed(w.call("A", "GET", "/v1/avatars/av-a"), 200)


# ---- lip-sync ----

@decides("POST /v1/lipsync", "GET /v1/jobs/{job_id}/mouth")
def check_lipsync(w: World) -> None:
    room_a = w.made["room_A"]
    body = {"avatar_id": "demo", "audio": w.made["audio_B"]}
    for ref in (room_a["id"], room_a["zbjname"], room_a["stream_key"]):  # another key's room's cycle
        refused(w.call("B", "POST", "/v1/lipsync", json={**body, "room": ref}), "unknown_room")
    refused(w.call("B", "POST", "/v1/lipsync", json={**body, "audio": w.made["audio_A"]}), "file_not_owned")
    refused(w.call("B", "POST", "/v1/lipsync", json={**body, "avatar_id": "av-a"}), "unknown_avatar")
    allowed(w.call("B", "POST", "/v1/lipsync", json={**body, "room": "my-label"}), 202)  # a label is B's own
    job_id = allowed(w.call("A", "POST", "/v1/lipsync", json={"avatar_id": "av-a", "audio": w.made["audio_A"],
                                                             "room": room_a["id"]}), 202)["job_id"]
    allowed(w.call("admin", "POST", "/v1/lipsync", json={"avatar_id": "av-a", "audio": w.made["audio_A"],
                                                         "room": room_a["id"]}), 202)
    refused(w.call("B", "GET", f"/v1/jobs/{job_id}/mouth"), "unknown_job")
    for who in ("A", "admin"):  # seen, not finished (no worker here)
        refused(w.call(who, "GET", f"/v1/jobs/{job_id}/mouth"), "job_not_finished", 409)
    w.write_output(f"lipsync/{job_id}.mouth.json", b'{"fps": 25, "frames": []}')
    refused(w.call("B", "GET", f"/v1/files/lipsync/{job_id}.mouth.json"))
    allowed(w.call("A", "GET", f"/v1/files/lipsync/{job_id}.mouth.json"), 200)


@decides("POST /v1/lipsync/upload")
def check_lipsync_upload(w: World) -> None:
    upload = {"audio": ("s.wav", w.made["wav"], "audio/wav")}
    refused(w.call("B", "POST", "/v1/lipsync/upload", data={"avatar_id": "av-a"}, files=upload), "unknown_avatar")
    refused(w.call("B", "POST", "/v1/lipsync/upload", data={"avatar_id": "demo", "room": w.made["room_A"]["id"]},
                   files=upload), "unknown_room")
    job_id = allowed(w.call("A", "POST", "/v1/lipsync/upload", data={"avatar_id": "av-a"}, files=upload),
                     202)["job_id"]
    refused(w.call("B", "GET", f"/v1/jobs/{job_id}"))
    allowed(w.call("admin", "POST", "/v1/lipsync/upload", data={"avatar_id": "av-a"}, files=upload), 202)


# ---- rooms and conversations ----

@decides("POST /v1/rooms", "GET /v1/rooms/{room_ref}", "GET /v1/rooms/{room_ref}/events")
def check_room_reads(w: World) -> None:
    room = w.made["room_A"]
    for ref in (room["id"], room["zbjname"], room["stream_key"]):
        refused(w.call("B", "GET", f"/v1/rooms/{ref}"), "unknown_room")
        refused(w.call("B", "GET", f"/v1/rooms/{ref}/events"), "unknown_room")
        for who in ("A", "admin"):
            assert allowed(w.call(who, "GET", f"/v1/rooms/{ref}"), 200)["id"] == room["id"]
            allowed(w.call(who, "GET", f"/v1/rooms/{ref}/events"), 200)
    refused(w.call("B", "POST", "/v1/rooms", json={"avatar_id": "av-a"}), "unknown_avatar")


@decides("GET /v1/rooms")
def check_room_list(w: World) -> None:
    ids = {who: {r["id"] for r in allowed(w.call(who, "GET", "/v1/rooms"), 200)} for who in ("A", "B", "admin")}
    room = w.made["room_A"]["id"]
    assert room in ids["A"] and room not in ids["B"] and room in ids["admin"]


@decides("DELETE /v1/rooms/{room_ref}")
def check_room_delete(w: World) -> None:
    room = allowed(w.call("A", "POST", "/v1/rooms", json={"username": "closing"}), 201)
    refused(w.call("B", "DELETE", f"/v1/rooms/{room['id']}"), "unknown_room")
    assert allowed(w.call("A", "GET", f"/v1/rooms/{room['id']}"), 200)["open"] is True
    allowed(w.call("admin", "DELETE", f"/v1/rooms/{room['id']}"), 204)


@decides("POST /v1/rooms/{room_ref}/say", "POST /v1/rooms/{room_ref}/interrupt")
def check_room_speech(w: World) -> None:
    room_a, room_b = w.made["room_A"]["id"], w.made["room_B"]["id"]
    refused(w.call("B", "POST", f"/v1/rooms/{room_a}/say", json={"text": "hi"}), "unknown_room")
    refused(w.call("B", "POST", f"/v1/rooms/{room_a}/interrupt"), "unknown_room")
    refused(w.call("B", "POST", f"/v1/rooms/{room_b}/say", json={"audio": w.made["audio_A"]}), "file_not_owned")
    said = allowed(w.call("A", "POST", f"/v1/rooms/{room_a}/say", json={"text": "hi"}), 202)
    refused(w.call("B", "GET", f"/v1/jobs/{said['tts_job_id']}"))
    allowed(w.call("A", "POST", f"/v1/rooms/{room_a}/say", json={"audio": w.made["audio_A"]}), 202)
    allowed(w.call("admin", "POST", f"/v1/rooms/{room_a}/say", json={"audio": w.made["audio_A"]}), 202)
    for who in ("A", "admin"):
        allowed(w.call(who, "POST", f"/v1/rooms/{room_a}/interrupt"), 200)


@decides("POST /v1/rooms/{room_ref}/messages", "GET /v1/rooms/{room_ref}/messages")
def check_messages(w: World) -> None:
    room_a, room_b = w.made["room_A"]["id"], w.made["room_B"]["id"]
    refused(w.call("B", "POST", f"/v1/rooms/{room_a}/messages", json={"text": "hi"}), "unknown_room")
    refused(w.call("B", "GET", f"/v1/rooms/{room_a}/messages"), "unknown_room")
    refused(w.call("B", "POST", f"/v1/rooms/{room_b}/messages", json={"audio": w.made["audio_A"]}), "file_not_owned")
    sent = allowed(w.call("A", "POST", f"/v1/rooms/{room_a}/messages", json={"text": "hello"}), 202)
    refused(w.call("B", "GET", f"/v1/jobs/{sent['job_id']}"))
    allowed(w.call("A", "GET", f"/v1/jobs/{sent['job_id']}"), 200)
    for who in ("A", "admin"):
        assert any(m["id"] == sent["message_id"] for m in allowed(w.call(who, "GET", f"/v1/rooms/{room_a}/messages"), 200))


@decides("PUT /v1/rooms/{room_ref}/material", "GET /v1/rooms/{room_ref}/material",
         "DELETE /v1/rooms/{room_ref}/material")
def check_material(w: World) -> None:
    room_a, room_b = w.made["room_A"], w.made["room_B"]["id"]
    sheet = {"qa": [{"q": "secret discount?", "a": "A's own answer"}]}
    assert allowed(w.call("A", "PUT", f"/v1/rooms/{room_a['id']}/material", json=sheet), 200)["source"] == "room"
    for ref in (room_a["id"], room_a["zbjname"], room_a["stream_key"]):
        refused(w.call("B", "GET", f"/v1/rooms/{ref}/material"), "unknown_room")
        refused(w.call("B", "PUT", f"/v1/rooms/{ref}/material", json={"qa": [{"q": "x", "a": "B's"}]}),
                "unknown_room")
        refused(w.call("B", "DELETE", f"/v1/rooms/{ref}/material"), "unknown_room")
    # B's own room answers from the sample, never from A's sheet
    assert allowed(w.call("B", "GET", f"/v1/rooms/{room_b}/material"), 200)["source"] == "sample"
    for who in ("A", "admin"):
        got = allowed(w.call(who, "GET", f"/v1/rooms/{room_a['id']}/material"), 200)
        assert got["source"] == "room" and got["material"]["qa"][0]["a"] == "A's own answer", got
    allowed(w.call("admin", "DELETE", f"/v1/rooms/{room_a['id']}/material"), 204)
    assert allowed(w.call("A", "GET", f"/v1/rooms/{room_a['id']}/material"), 200)["source"] == "sample"


@decides("WS /v1/rooms/{room_ref}/ws")
def check_feed(w: World) -> None:
    from starlette.websockets import WebSocketDisconnect

    room = w.made["room_A"]["id"]
    with pytest.raises(WebSocketDisconnect) as closed:
        with w.client.websocket_connect(f"/v1/rooms/{room}/ws?key={KEY_B}"):
            pass
    assert closed.value.code == 4404
    for who in ("A", "admin"):
        with w.client.websocket_connect(f"/v1/rooms/{room}/ws?key={Q[who]}") as ws:
            assert ws.receive_json()["event"] == "hello"


@decides("WS /v1/rooms/{room_ref}/audio")
def check_voice(w: World) -> None:
    """The room's live audio input: its owner only (and the admin), like the feed. Each allowed
    speaker gets a room of A's own: a room takes one speaker socket at a time."""
    from starlette.websockets import WebSocketDisconnect

    # By id and by stream key (the audience page's name for the room), another key's socket is refused;
    # without a key at all the handshake says so.
    for ref, key, code in ((w.made["room_A"]["id"], KEY_B, 4404), (w.made["room_A"]["stream_key"], KEY_B, 4404),
                           (w.made["room_A"]["stream_key"], None, 4401)):
        with pytest.raises(WebSocketDisconnect) as closed:
            with w.client.websocket_connect(f"/v1/rooms/{ref}/audio" + (f"?key={key}" if key else "")):
                pass
        assert closed.value.code == code, (ref, key)
    for who in ("A", "admin"):
        room = allowed(w.call("A", "POST", "/v1/rooms", json={"username": f"voice_{who}", "ttl_s": 600}), 201)["id"]
        with w.client.websocket_connect(f"/v1/rooms/{room}/audio?key={Q[who]}") as ws:
            assert ws.receive_json()["event"] == "listening"


# ---- legacy rooms and speech ----

@decides("GET /tts")
def check_legacy_tts(w: World) -> None:
    path = allowed(w.call("A", "GET", "/tts", legacy=True, params={"msg": "legacy"}), 200)["message"]
    w.write_output("tts/" + path.split("/", 1)[1], w.made["wav"])
    refused(w.call("B", "GET", f"/{path}", legacy=True))
    for who in ("A", "admin"):
        allowed(w.call(who, "GET", f"/{path}", legacy=True), 200)


@decides("GET /asr")
def check_legacy_asr(w: World) -> None:
    refused(w.call("B", "GET", "/asr", legacy=True, params={"url": w.made["audio_A"]}), "file_not_owned")
    for who in ("A", "admin"):  # recognition runs in a worker: here it is still running
        refused(w.call(who, "GET", "/asr", legacy=True, params={"url": w.made["audio_A"]}), "timeout", 504)


@decides("GET /create/zbj", "GET /human")
def check_legacy_rooms(w: World) -> None:
    zbjname = allowed(w.call("A", "GET", "/create/zbj", legacy=True, params={"username": "legacy_a"}), 200)["message"]
    refused(w.call("B", "GET", f"/v1/rooms/{zbjname}"), "unknown_room")
    own = {"zbjname": w.made["room_B"]["zbjname"]}
    refused(w.call("B", "GET", "/human", legacy=True, params={"zbjname": zbjname, "audioUrl": w.made["audio_B"]}),
            "unknown_room")
    refused(w.call("B", "GET", "/human", legacy=True, params={**own, "audioUrl": w.made["audio_A"]}), "file_not_owned")
    for who in ("A", "admin"):
        allowed(w.call(who, "GET", "/human", legacy=True, params={"zbjname": zbjname, "audioUrl": w.made["audio_A"]}),
                200)


# ---- interviews ----

def _interview(w: World) -> dict:
    if "interview" not in w.made:
        r = w.call("A", "POST", "/v1/interviews", json={"job": "软件工程师", "count": 2, "avatar_id": "av-a"})
        w.made["interview"] = allowed(r, 201)
    return w.made["interview"]


@decides("POST /v1/interviews", "GET /v1/interviews/{ref}")
def check_interview_reads(w: World) -> None:
    interview = _interview(w)
    for ref in (interview["id"], interview["zbjname"], interview["room_id"]):
        refused(w.call("B", "GET", f"/v1/interviews/{ref}"), "unknown_interview")
        for who in ("A", "admin"):
            assert allowed(w.call(who, "GET", f"/v1/interviews/{ref}"), 200)["id"] == interview["id"]
    clip = interview["questions"][0]
    refused(w.call("B", "GET", f"/v1/jobs/{clip['clip']['job_id']}"))
    w.write_output(clip["clip"]["file"], b"\x00\x00\x00\x18ftypmp42")
    refused(w.call("B", "GET", "/" + clip["clip"]["legacy_path"], legacy=True))
    allowed(w.call("A", "GET", "/" + clip["clip"]["legacy_path"], legacy=True), 200)
    refused(w.call("B", "POST", "/v1/interviews", json={"job": "x", "count": 1, "avatar_id": "av-a"}), "unknown_avatar")


@decides("POST /v1/interviews/{ref}/play", "GET /v1/stock-clips")
def check_interview_play(w: World) -> None:
    interview = _interview(w)
    refused(w.call("B", "POST", f"/v1/interviews/{interview['id']}/play", json={"clip": 1}), "unknown_interview")
    # A's stock clip of A's avatar: still rendering here (no worker), and A's alone to list
    for who in ("A", "admin"):
        refused(w.call(who, "POST", f"/v1/interviews/{interview['id']}/play", json={"clip": 96}), "clip_not_ready", 504)
    names = {who: {c["name"] for c in allowed(w.call(who, "GET", "/v1/stock-clips"), 200)} for who in ("A", "B", "admin")}
    mine = {n for n in names["A"] if "_av-a_" in n}
    assert mine and mine <= names["admin"] and not mine & names["B"]


@decides("GET /create/zbjv2", "GET /humanv2")
def check_legacy_interviews(w: World) -> None:
    r = w.call("A", "GET", "/create/zbjv2", legacy=True, params={"job": "会计", "count": "1"})
    zbjname = allowed(r, 200)["zbjname"]
    refused(w.call("B", "GET", f"/v1/interviews/{zbjname}"), "unknown_interview")
    refused(w.call("B", "GET", "/humanv2", legacy=True, params={"zbjname": zbjname, "audioUrl": "0"}), "unknown_room")
    for who in ("A", "admin"):
        refused(w.call(who, "GET", "/humanv2", legacy=True, params={"zbjname": zbjname, "audioUrl": "0"}),
                "clip_not_ready", 504)


# ---- feedback ----

def _rows_of_a(w: World) -> str:
    """An interview's feedback rows, written as the feedback worker writes them for a job of A's."""
    from api.access import key_owner
    from core.feedback.db import replace_result

    ms_id = w.made.setdefault("ms_id", f"ms-{uuid.uuid4().hex[:8]}")
    replace_result(w.settings, {"ms_id": ms_id, "index": 0, "content": "good", "sort": 80, "url": None,
                                "owner": key_owner(KEY_A)})
    return ms_id


@decides("GET /v1/feedback", "POST /v1/feedback")
def check_feedback(w: World) -> None:
    ms_id = _rows_of_a(w)
    video = {"file": ("answer.mp4", w.made["video"], "video/mp4")}
    refused(w.call("B", "GET", "/v1/feedback", params={"ms_id": ms_id}), "unknown_ms_id")
    refused(w.call("B", "POST", "/v1/feedback", data={"ms_id": ms_id, "index": "0"}, files=video), "unknown_ms_id")
    for who in ("A", "admin"):
        rows = allowed(w.call(who, "GET", "/v1/feedback", params={"ms_id": ms_id}), 200)["results"]
        assert [r["content"] for r in rows] == ["good"]
    job = allowed(w.call("A", "POST", "/v1/feedback", data={"ms_id": ms_id, "index": "1"}, files=video), 202)
    refused(w.call("B", "GET", f"/v1/jobs/{job['job_id']}"))
    allowed(w.call("admin", "POST", "/v1/feedback", data={"ms_id": ms_id, "index": "1"}, files=video), 202)
    # an answer video of A's as B's input, into B's own interview
    source = job_input(w, job["job_id"])
    refused(w.call("B", "POST", "/v1/feedback", data={"ms_id": "b-own", "index": "0", "source": source}),
            "file_not_owned")


@decides("GET /bqfk")
def check_legacy_feedback(w: World) -> None:
    ms_id = _rows_of_a(w)
    up = allowed(w.call("B", "POST", "/v1/feedback", data={"ms_id": "b-own", "index": "0"},
                        files={"file": ("b.mp4", w.made["video"], "video/mp4")}), 202)
    b_video = job_input(w, up["job_id"])
    refused(w.call("B", "GET", "/bqfk", legacy=True, params={"url": b_video, "msId": ms_id, "index": "0"}),
            "unknown_ms_id")
    assert allowed(w.call("admin", "GET", "/bqfk", legacy=True, params={"url": b_video, "msId": ms_id, "index": "2"}),
                   200) == {"message": "success"}


# ---- aggregate routes ----

@decides("GET /metrics")
def check_metrics(w: World) -> None:
    text = w.call("B", "GET", "/metrics", legacy=True).text
    room = w.made["room_A"]
    assert room["id"] not in text and room["stream_key"] not in text


# ---- the tests ----

def test_every_route_has_one_ownership_decision():
    undecided = [r for r in ROUTES if r not in CHECKS and r not in NO_RESOURCE]
    assert not undecided, f"routes without an ownership decision (add one to tests/test_ownership.py): {undecided}"
    stale = sorted((set(CHECKS) | set(NO_RESOURCE)) - set(ROUTES))
    assert not stale, f"decisions for routes the app no longer has: {stale}"
    assert not set(CHECKS) & set(NO_RESOURCE)


def test_a_new_route_without_a_decision_is_caught(tmp_path):
    from core.settings import Settings

    app = build_app(Settings(_env_file=None, data_dir=tmp_path))
    app.add_api_route("/v1/widgets/{widget_id}", lambda widget_id: {}, methods=["GET"])
    table = route_table(app)
    assert "GET /v1/widgets/{widget_id}" in table and set(ROUTES) < set(table)


@pytest.mark.parametrize("route", [r for r in ROUTES if r in CHECKS])
def test_another_key_cannot_reach_it(world, route):
    CHECKS[route](world)


def test_file_owners_find_every_output_of_a_job(redis_server, tmp_path):
    from core.files import FileOwners

    redis = Redis.from_url(redis_server.url(8))
    redis.flushdb()
    owners = FileOwners(redis)
    owners.claim("lipsync/user.x*0f_0", "owner-a")
    for name in ("user.x*0f_0.mp4", "user.x*0f_0.mouth.json"):
        assert owners.owner_of(tmp_path / "lipsync" / name) == "owner-a"
    assert owners.owner_of(tmp_path / "lipsync" / "user.x*0f_1.mp4") is None
    assert owners.owner_of(tmp_path / "tts" / "user.x*0f_0.wav") is None  # another kind
    (tmp_path / "lipsync").mkdir()
    (tmp_path / "lipsync" / "user.x*0f_0.mp4").write_bytes(b"x")
    owners.claim("lipsync/gone", "owner-a")
    assert owners.prune(tmp_path, max_age_s=-1) == 1  # only the record whose files are all gone
    assert owners.owner_of(tmp_path / "lipsync" / "user.x*0f_0.mp4") == "owner-a"
    redis.flushdb()


def test_feedback_rows_of_another_key_are_not_replaced(tmp_path):
    """The worker's own guard, for a job admitted before the interview had rows: another key's write
    is refused; an admin's keeps the interview's owner."""
    from core.feedback.db import NotYours, owners, read_results, replace_result
    from core.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path)
    row = {"ms_id": "m1", "index": 0, "content": "a", "sort": 50, "url": None}
    replace_result(settings, {**row, "owner": "owner-a"})
    with pytest.raises(NotYours):
        replace_result(settings, {**row, "content": "b", "owner": "owner-b"})
    with pytest.raises(NotYours):
        replace_result(settings, {**row, "index": 1, "content": "b", "owner": None})
    replace_result(settings, {**row, "content": "by admin", "owner": "owner-admin"}, admin=True)
    assert owners(settings, "m1") == {"owner-a"}
    assert [r["content"] for r in read_results(settings, "m1")] == ["by admin"]


def test_feedback_tables_without_owners_are_migrated(tmp_path):
    """A table made before rows had owners gains the column; its rows stay readable and shared."""
    from sqlalchemy import Column, MetaData, Table, create_engine, insert

    from core.feedback.db import db_url, feedback_table, owners, read_results
    from core.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path, feedback_table="old_bq")
    engine = create_engine(db_url(settings))
    old = Table("old_bq", MetaData(), *(Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                        for c in feedback_table("old_bq").columns if c.name != "owner"))
    old.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(old).values(ms_id="old", index=0, content="kept", sort=70))
    engine.dispose()
    assert owners(settings, "old") == {None}
    assert [row["content"] for row in read_results(settings, "old")] == ["kept"]
