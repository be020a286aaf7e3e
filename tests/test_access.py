"""Access: API keys on /v1, legacy routes and downloads; the address allow-list; ownership of avatars
and rooms; read-only built-ins; constant-time key checks; CORS closed by default; OpenAPI security.

The session fleet stays open; these tests add APIs with keys configured on the same Redis and data
directory (the session's workers serve them): one API process (keys; its log is checked), and the
address allow-list variants in this process, reached from 127.0.0.1 (an API process costs 2-3 s of CPU
to start and is not what they test)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import ExitStack

import httpx
import pytest
from redis import Redis

from conftest import ROOT, free_port, in_process_api, poll_job, wait_until

KEY_A, KEY_B, ADMIN = "key-a-0123456789", "key-b-0123456789", "admin-0123456789"


def _start(service, name: str, **extra: str):
    port = free_port()
    env = {k: v for k, v in service.env.items() if k != "MTL_CORS_ORIGINS"}  # CORS at its default
    env.update({"MTL_API_PORT": str(port), "MTL_API_PROCESSES": "1", **extra})
    log = (service.data_dir / f"api-access-{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)


def _in_process(service, **extra: str):
    """The app in this process with the settings `_start` gives an API process."""
    env = {k: v for k, v in service.env.items() if k != "MTL_CORS_ORIGINS"}  # CORS at its default
    return in_process_api({**env, **extra})


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def apis(service):
    keys = {"MTL_API_KEYS": f'["{KEY_A}", "{KEY_B}"]', "MTL_ADMIN_KEYS": f'["{ADMIN}"]'}
    proc, keyed = _start(service, "keys", **keys)
    try:
        with ExitStack() as stack:
            clients = {
                # keys, and legacy clients without headers let in by address
                "keys_local": stack.enter_context(_in_process(service, **keys,
                                                              MTL_ALLOWED_ADDRESSES='["127.0.0.1/32"]')),
                "allowlist": stack.enter_context(_in_process(service, **keys, MTL_ACCESS_MODE="allowlist",
                                                             MTL_ALLOWED_ADDRESSES='["127.0.0.0/8"]')),
                "allowlist_other": stack.enter_context(_in_process(service, MTL_ACCESS_MODE="allowlist",
                                                                   MTL_ALLOWED_ADDRESSES='["10.0.0.0/8", "not-a-cidr"]')),
            }
            wait_until(lambda: _up(keyed), 60, what="an API with access settings")
            yield {"keys": keyed, **clients}
    finally:
        keyed.close()
        proc.terminate()
        proc.wait(timeout=15)


def h(key: str) -> dict:
    return {"X-API-Key": key}


def test_v1_needs_a_valid_key_in_a_header(apis):
    api = apis["keys"]
    for headers in ({}, h("wrong"), {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + KEY_A}):
        r = api.get("/v1/avatars", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (headers, r.text)
    assert api.get("/v1/avatars", params={"key": KEY_A}).status_code == 401  # query keys: legacy/downloads only
    assert api.get("/v1/avatars", headers=h(KEY_A)).status_code == 200
    assert api.get("/v1/avatars", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 200
    assert api.get("/v1/fleet", headers=h(ADMIN)).status_code == 200
    assert api.get("/healthz").status_code == 200  # health stays open


def test_legacy_routes_and_downloads_need_a_key(apis, api):
    keyed = apis["keys"]
    for path, params in (("/tts", {"msg": "hello"}), ("/asr", {"url": "tests/x.wav"}), ("/tests/x.wav", {}),
                         ("/create/zbj", {}), ("/human", {"audioUrl": "tests/x.wav"}), ("/humanv2", {}),
                         ("/create/zbjv2", {"job": "x"}), ("/bqfk", {"url": "tests/x.mp4"}),
                         ("/v1/files/tts/x.wav", {}), ("/metrics", {})):
        r = keyed.get(path, params=params)
        assert r.status_code == 401, (path, r.status_code, r.text)
        body = r.json()
        assert (body["error"]["code"] if path.startswith("/v1/") else body["error"]) == "unauthorized"
    # ?key= is how header-less clients pass it
    assert keyed.get("/tests/nope.wav", params={"key": KEY_A}).status_code == 404
    job = poll_job(api, api.post("/v1/tts", json={"text": "Only with a key."}).json()["job_id"])
    assert job["status"] == "finished", job
    for url in (job["result"]["url"], "/" + job["result"]["legacy_path"]):
        assert keyed.get(url).status_code == 401
        r = keyed.get(url, params={"key": KEY_B})
        assert r.status_code == 200 and r.content[:4] == b"RIFF", url
        assert keyed.get(url, headers=h(KEY_A)).status_code == 200
    assert keyed.get("/metrics", params={"key": KEY_A}).status_code == 200


def test_address_allow_list(apis, api):
    job = poll_job(api, api.post("/v1/tts", json={"text": "By address."}).json()["job_id"])
    legacy = "/" + job["result"]["legacy_path"]
    # keys mode: an allowed address may call legacy routes and downloads without a key, not /v1
    local = apis["keys_local"]
    assert local.get(legacy).status_code == 200
    assert local.get(job["result"]["url"]).status_code == 200
    assert local.get("/v1/avatars").status_code == 401
    assert local.get("/v1/avatars", headers=h(KEY_A)).status_code == 200
    assert apis["keys"].get(legacy).status_code == 401  # no address allowed there
    # allowlist mode: the address is enough everywhere; other addresses need a key
    assert apis["allowlist"].get("/v1/avatars").status_code == 200
    assert apis["allowlist"].get(legacy).status_code == 200
    other = apis["allowlist_other"]
    assert other.get("/v1/avatars").status_code == 401
    assert other.get(legacy).status_code == 401


def test_rooms_belong_to_their_key(apis, service, api):
    speech = poll_job(api, api.post("/v1/tts", json={"text": "Mine."}).json()["job_id"])["result"]["legacy_path"]
    api = apis["keys"]
    r = api.post("/v1/rooms", json={"username": "owner_a", "ttl_s": 60}, headers=h(KEY_A))
    assert r.status_code == 201, r.text
    room = r.json()
    try:
        # the owner is stored as a hash, never the key
        redis = Redis.from_url(service.env["MTL_REDIS_URL"])
        from api.access import key_owner

        stored = redis.get(f"mtl:room:{room['id']}:owner").decode()
        assert stored == key_owner(KEY_A) and KEY_A not in stored
        for ref in (room["id"], room["zbjname"], room["stream_key"]):
            assert api.get(f"/v1/rooms/{ref}", headers=h(KEY_A)).status_code == 200
            r = api.get(f"/v1/rooms/{ref}", headers=h(KEY_B))
            assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_room"
        for method, path, body in (("DELETE", "", None), ("POST", "/say", {"text": "hi"}),
                                   ("POST", "/interrupt", None), ("GET", "/events", None)):
            r = api.request(method, f"/v1/rooms/{room['id']}{path}", json=body, headers=h(KEY_B))
            assert r.status_code == 404, (method, path, r.text)
        # legacy: the same rules with ?key=
        r = api.get("/human", params={"zbjname": room["zbjname"], "audioUrl": speech, "key": KEY_B})
        assert r.status_code == 404 and r.json()["error"] == "unknown_room", r.text
        ids_a = {x["id"] for x in api.get("/v1/rooms", headers=h(KEY_A)).json()}
        ids_b = {x["id"] for x in api.get("/v1/rooms", headers=h(KEY_B)).json()}
        ids_admin = {x["id"] for x in api.get("/v1/rooms", headers=h(ADMIN)).json()}
        assert room["id"] in ids_a and room["id"] not in ids_b and room["id"] in ids_admin
        assert api.get(f"/v1/rooms/{room['id']}", headers=h(ADMIN)).status_code == 200
    finally:
        assert api.delete(f"/v1/rooms/{room['id']}", headers=h(KEY_A)).status_code == 204
    # Who owns the closed room's transcript is kept only as long as the transcript (it expires).
    assert 0 < redis.ttl(f"mtl:room:{room['id']}:owner") <= 24 * 3600


def test_legacy_room_made_with_a_query_key_is_owned(apis):
    api = apis["keys"]
    r = api.get("/create/zbj", params={"username": "legacy_a", "key": KEY_A})
    assert r.status_code == 200, r.text
    zbjname = r.json()["message"]
    try:
        assert api.get(f"/v1/rooms/{zbjname}", headers=h(KEY_B)).status_code == 404
        assert api.get(f"/v1/rooms/{zbjname}", headers=h(KEY_A)).status_code == 200
    finally:
        assert api.delete(f"/v1/rooms/{zbjname}", headers=h(KEY_A)).status_code == 204


def test_avatars_belong_to_their_key(apis, service):
    from api.access import key_owner

    api = apis["keys"]
    avatars = service.data_dir / "avatars"
    shutil.copytree(avatars / "demo", avatars / "owned-by-a", dirs_exist_ok=True)
    redis = Redis.from_url(service.env["MTL_REDIS_URL"])
    redis.hset("mtl:avatar-owners", "owned-by-a", key_owner(KEY_A))
    try:
        assert api.get("/v1/avatars/owned-by-a", headers=h(KEY_A)).status_code == 200
        for path in ("", "/image", "/face"):
            r = api.get(f"/v1/avatars/owned-by-a{path}", headers=h(KEY_B))
            assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_avatar", path
        assert api.delete("/v1/avatars/owned-by-a", headers=h(KEY_B)).status_code == 404
        r = api.post("/v1/avatars", data={"avatar_id": "owned-by-a", "source": "tests/x.png"}, headers=h(KEY_B))
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_owner"
        r = api.post("/v1/rooms", json={"avatar_id": "owned-by-a"}, headers=h(KEY_B))
        assert r.status_code == 404, r.text
        r = api.post("/v1/lipsync", json={"avatar_id": "owned-by-a", "text": "hi"}, headers=h(KEY_B))
        assert r.status_code == 404, r.text
        ids = lambda key: {a["id"] for a in api.get("/v1/avatars", headers=h(key)).json()}  # noqa: E731
        assert "owned-by-a" in ids(KEY_A) and "owned-by-a" not in ids(KEY_B) and "owned-by-a" in ids(ADMIN)
        assert "demo" in ids(KEY_B)  # built-ins are everyone's
        assert api.delete("/v1/avatars/owned-by-a", headers=h(KEY_A)).status_code == 204
        assert redis.hget("mtl:avatar-owners", "owned-by-a") is None
    finally:
        shutil.rmtree(avatars / "owned-by-a", ignore_errors=True)
        redis.hdel("mtl:avatar-owners", "owned-by-a")


def _finished(api: httpx.Client, job_id: str, key: str) -> dict:
    def done():
        body = api.get(f"/v1/jobs/{job_id}", headers=h(key)).json()
        return body if body["status"] in ("finished", "failed") else None

    return wait_until(done, 120, what=f"job {job_id}")


def test_tenants_do_not_reach_each_others_work(apis):
    """Issue 16's leaks, with the fleet's real workers: B gets 404 for A's jobs (read, mouth, cancel,
    fleet list), files (both names, as input), interview; A's rooms are labelled opaquely in /metrics
    and B cannot move their lip-sync cycle. (Feedback rows: tests/test_ownership.py, in-process.)"""
    api = apis["keys"]
    job = _finished(api, api.post("/v1/tts", json={"text": "Tenant A only."}, headers=h(KEY_A)).json()["job_id"], KEY_A)
    assert job["status"] == "finished", job
    for method, path in (("GET", ""), ("GET", "/mouth"), ("DELETE", "")):
        r = api.request(method, f"/v1/jobs/{job['id']}{path}", headers=h(KEY_B))
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_job", (method, path, r.text)
    recent = lambda key: {j["id"] for j in api.get("/v1/fleet", params={"recent": 100},  # noqa: E731
                                                     headers=h(key)).json()["recent_jobs"]}
    assert job["id"] in recent(KEY_A) and job["id"] not in recent(KEY_B) and job["id"] in recent(ADMIN)
    url, legacy = job["result"]["url"], "/" + job["result"]["legacy_path"]
    for path in (url, legacy):
        assert api.get(path, params={"key": KEY_B}).status_code == 404, path
        assert api.get(path, params={"key": KEY_A}).content[:4] == b"RIFF", path
    r = api.post("/v1/asr", data={"source": job["result"]["legacy_path"]}, headers=h(KEY_B))
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_owned", r.text
    r = api.post("/v1/interviews", json={"job": "tester", "count": 1, "language": "en"}, headers=h(KEY_A))
    assert r.status_code == 201, r.text
    interview = r.json()
    room = api.get(f"/v1/rooms/{interview['room_id']}", headers=h(KEY_A)).json()
    try:
        for ref in (interview["id"], interview["zbjname"]):
            r = api.get(f"/v1/interviews/{ref}", headers=h(KEY_B))
            assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_interview", r.text
            assert api.get(f"/v1/interviews/{ref}", headers=h(KEY_A)).status_code == 200
        r = api.post("/v1/lipsync", json={"avatar_id": "demo", "text": "hi", "room": room["id"]}, headers=h(KEY_B))
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_room", r.text
        text = wait_until(lambda: (t := api.get("/metrics", params={"key": KEY_A}).text)
                          and room["metrics_label"] in t and t, 60, what="the room's frames counted")
        assert room["id"] not in text and room["stream_key"] not in text
    finally:
        assert api.delete(f"/v1/rooms/{room['id']}", headers=h(KEY_A)).status_code == 204


def test_built_ins_are_read_only(apis, api, service):
    keyed = apis["keys"]
    for client, headers in ((keyed, h(KEY_A)), (keyed, h(ADMIN)), (api, {})):
        r = client.delete("/v1/avatars/demo", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "read_only", r.text
        r = client.post("/v1/avatars", data={"avatar_id": "demo", "source": "tests/x.png"}, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "read_only", r.text
    assert (service.data_dir / "avatars" / "demo" / "avatar.json").is_file()
    # the default room (legacy /human without zbjname) may speak, never be closed
    from core.rooms import RoomStore
    from core.settings import Settings

    settings = Settings(redis_url=service.env["MTL_REDIS_URL"], data_dir=service.data_dir)
    room = RoomStore(Redis.from_url(service.env["MTL_REDIS_URL"]), settings).ensure_default()
    for client, headers in ((keyed, h(ADMIN)), (api, {})):
        r = client.delete(f"/v1/rooms/{room.zbjname}", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "read_only", r.text
    assert keyed.get(f"/v1/rooms/{room.id}", headers=h(KEY_B)).json()["open"] is True


def test_cors_is_closed_by_default(apis):
    from core.settings import Settings

    assert Settings(_env_file=None).cors_origins == []
    r = apis["keys"].get("/healthz", headers={"Origin": "http://elsewhere.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = apis["keys"].options("/v1/tts", headers={"Origin": "http://elsewhere.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_keys_are_compared_in_constant_time(monkeypatch):
    import hmac

    import api.access as access

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(access.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert access.key_in("b", ["a", "b", "c"]) and not access.key_in("z", ["a", "b", "c"])
    assert len(calls) == 6  # every key is compared, found or not
    src = (ROOT / "api" / "deps.py").read_text() + (ROOT / "api" / "access.py").read_text()
    assert "in settings.api_keys" not in src and "in settings.admin_keys" not in src


def test_openapi_declares_the_security_schemes(apis):
    spec = apis["keys"].get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {**schemes["APIKeyHeader"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyQuery"]["in"] == "query" and schemes["APIKeyQuery"]["name"] == "key"
    v1 = spec["paths"]["/v1/tts"]["post"]["security"]
    assert {"APIKeyHeader": []} in v1 and {"APIKeyQuery": []} not in v1
    assert {"APIKeyQuery": []} in spec["paths"]["/tts"]["get"]["security"]
    assert {"APIKeyQuery": []} in spec["paths"]["/v1/files/{kind}/{name}"]["get"]["security"]


def test_open_access_is_announced_loudly(service):
    logs = "".join(p.read_text(errors="replace") for p in service.fleet.log_dir.glob("api-*.log"))
    assert "ACCESS IS OPEN" in logs
    keyed = (service.data_dir / "api-access-keys.log").read_text(errors="replace")
    assert "ACCESS IS OPEN" not in keyed
