"""Backpressure and retention (issue 7): an API process of its own with a tight rate limit (the process's
event loop under a flood), the app in this process with tight caps (on their own Redis databases, beside
the session's service), the janitor as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from conftest import ROOT, Fleet, fleet_env, free_port, in_process_api, wait_until
from speech import tone_wav

STRICT_DB, CAPS_DB, JANITOR_DB = 11, 12, 13


def _start_api(fleet: Fleet, port: int, name: str) -> httpx.Client:
    fleet.spawn("-m", "api", name=name)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def up():
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 60, interval=0.2, what=f"{name} up")
    return client


@pytest.fixture(scope="module")
def strict(service, redis_server, tmp_path_factory):
    """One API process: 20 requests/second per caller, and a free-disk threshold no disk meets."""
    Redis.from_url(redis_server.url(STRICT_DB)).flushdb()
    port = free_port()
    env = fleet_env(redis_server.url(STRICT_DB), service.data_dir, MTL_API_PORT=str(port), MTL_API_PROCESSES="1",
                    MTL_RATE_LIMIT="20/second", MTL_MIN_FREE_DISK_MB=str(1 << 40))
    fleet = Fleet(env=env, log_dir=tmp_path_factory.mktemp("strict-logs"))
    client = _start_api(fleet, port, "api-strict")
    yield client
    client.close()
    fleet.stop()


@pytest.fixture(scope="module")
def caps(service, redis_server, tmp_path_factory):
    """The app (in this process) with tight caps and no batch workers (queued jobs stay queued); stream
    workers are started by the test that needs one. Shares the service's data dir (its demo avatar)."""
    Redis.from_url(redis_server.url(CAPS_DB)).flushdb()
    env = fleet_env(redis_server.url(CAPS_DB), service.data_dir,
                    MTL_RATE_LIMIT_ENABLED="false", MTL_TTS_MAX_QUEUED="3", MTL_MAX_OPEN_ROOMS="2",
                    MTL_MAX_UTTERANCES_PER_ROOM="3", MTL_ROOM_PUBLISHER_GRACE_S="1", MTL_STREAM_CAPACITY="1",
                    MTL_RTMP_PORT=str(service.media.rtmp_port), MTL_MEDIA_HTTP_PORT=str(service.media.http_port),
                    MTL_DEFAULT_ROOM_PERSISTENT="false")
    fleet = Fleet(env=env, log_dir=tmp_path_factory.mktemp("caps-logs"))
    try:
        with in_process_api(env) as client:  # what the app answers; only the stream worker is a process
            client.fleet = fleet
            yield client
    finally:
        fleet.stop()


def _close_all_rooms(client: httpx.Client) -> None:
    for room in client.get("/v1/rooms").json():
        client.delete(f"/v1/rooms/{room['id']}")


# ---- rate limits ----

LOAD = textwrap.dedent("""
    import asyncio, json, sys, httpx
    base, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    async def main():
        out = []
        sem = asyncio.Semaphore(conc)
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     limits=httpx.Limits(max_connections=conc)) as c:
            async def one(i):
                async with sem:
                    r = await c.get(f"/v1/jobs/{i:032x}")
                    body = r.json()
                    code = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else None
                    out.append([r.status_code, r.headers.get("retry-after"), code])
            await asyncio.gather(*(one(i) for i in range(n)))
        json.dump(out, sys.stdout)
    asyncio.run(main())
""")


def test_over_the_rate_limit_429_with_retry_after_while_healthz_stays_fast(strict):
    base = str(strict.base_url).rstrip("/")
    started = time.monotonic()
    load = subprocess.Popen([sys.executable, "-c", LOAD, base, "1000", "16"], stdout=subprocess.PIPE, cwd=ROOT)
    latencies = []
    with httpx.Client(base_url=base, timeout=10) as probe:
        while load.poll() is None:
            t0 = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)
    elapsed = time.monotonic() - started
    results = json.loads(load.stdout.read())
    assert load.returncode == 0 and len(results) == 1000
    limited = [r for r in results if r[0] == 429]
    # At most 20 per second (plus the second the load started in) got through.
    assert len(limited) >= 1000 - 20 * (elapsed + 2), (len(limited), elapsed)
    assert all(code == "rate_limited" and retry and int(retry) >= 1 for _, retry, code in limited)
    assert {r[0] for r in results} <= {429, 404}
    assert len(latencies) >= 20, "the load ended before healthz could be measured"
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    print(f"\n1000 requests in {elapsed:.2f} s: {len(limited)} x 429; /healthz p50 "
          f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max "
          f"{latencies[-1] * 1000:.1f} ms ({len(latencies)} probes)")
    # Under the rate-limited flood a blocked /healthz would take seconds on every probe; 250 ms leaves
    # room for `make test`'s parallel fleets on two cores (105 ms measured there, under 100 alone). The
    # 95th percentile, not the 99th: with ~80 probes the 99th is the slowest one, and one probe that
    # waited for a core another test worker held (415 ms on a clean clone, p50 1.4 ms) says nothing
    # about /healthz.
    assert p95 < 0.250, f"/healthz p95 {p95 * 1000:.1f} ms under the load ({len(latencies)} probes)"


def test_legacy_route_over_the_limit_keeps_its_message_shape(strict):
    for _ in range(60):  # 20 per second: a quick burst crosses it
        r = strict.get("/tests/nothing-here.wav")
        if r.status_code == 429:
            break
    assert r.status_code == 429, r.text
    body = r.json()
    assert isinstance(body["message"], str) and body["message"] and body["error"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    assert strict.get("/healthz").status_code == 200  # never limited


# ---- free disk ----

def test_nearly_full_disk_refuses_new_work_with_507(strict):
    time.sleep(1.1)  # a fresh rate-limit second
    r = strict.post("/v1/tts", json={"text": "hello"})
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "insufficient_storage" and r.headers["retry-after"]
    r = strict.post("/v1/files", files={"file": ("a.wav", tone_wav(1.0), "audio/wav")})
    assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
    r = strict.get("/tts", params={"msg": "你好"})
    assert r.status_code == 507 and r.json()["message"] and r.json()["error"] == "insufficient_storage"
    assert strict.get("/v1/rooms").status_code == 200  # reads (and live rooms) go on


# ---- queue depth ----

def test_queue_depth_cap_answers_429_queue_full(caps):
    for i in range(3):
        assert caps.post("/v1/tts", json={"text": f"queued {i}"}).status_code == 202
    r = caps.post("/v1/tts", json={"text": "one too many"})
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "queue_full" and err["queue"] == "tts" and err["limit"] == 3
    assert int(r.headers["retry-after"]) >= 1
    rooms_before = len(caps.get("/v1/rooms").json())
    r = caps.post("/v1/interviews", json={"job": "软件工程师", "count": 2})
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full", r.text
    assert len(caps.get("/v1/rooms").json()) == rooms_before  # refused before its room opened
    fleet = caps.get("/v1/fleet").json()
    assert fleet["queues"]["tts"]["waiting"] == 3 and fleet["queues"]["tts"]["limit"] == 3
    assert fleet["rooms_limit"] == 2 and fleet["free_disk_mb"] > 0
    r = caps.get("/tts", params={"msg": "legacy too"})
    assert r.status_code == 429 and r.json()["error"] == "queue_full" and r.json()["message"]
    Redis.from_url(str(caps.fleet.env["MTL_REDIS_URL"])).delete("rq:queue:tts")
    assert caps.post("/v1/tts", json={"text": "room again"}).status_code == 202


# ---- rooms ----

def test_open_rooms_cap_and_utterances_cap(caps):
    _close_all_rooms(caps)
    first = caps.post("/v1/rooms", json={"username": "capA"})
    second = caps.post("/v1/rooms", json={"username": "capB"})
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    r = caps.post("/v1/rooms", json={"username": "capC"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "too_many_rooms" and r.headers["retry-after"]
    r = caps.get("/create/zbj", params={"username": "capD"})
    assert r.status_code == 503 and r.json()["error"] == "too_many_rooms" and r.json()["message"]
    assert len(caps.get("/v1/rooms").json()) == 2  # the refused ones left nothing behind

    room = first.json()
    up = caps.post("/v1/files", files={"file": ("s.wav", tone_wav(1.0), "audio/wav")})
    assert up.status_code == 201, up.text
    audio = up.json()["file"]
    for _ in range(3):
        assert caps.post(f"/v1/rooms/{room['id']}/say", json={"audio": audio}).status_code == 202
    r = caps.post(f"/v1/rooms/{room['id']}/say", json={"audio": audio})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "room_queue_full" and r.headers["retry-after"]
    r = caps.get("/human", params={"zbjname": room["zbjname"], "audioUrl": audio})
    assert r.status_code == 429 and r.json()["error"] == "room_queue_full" and r.json()["message"]
    assert caps.get(f"/v1/rooms/{room['id']}").json()["pending_utterances"] == 3

    # No stream worker at all: the room says so once its grace is over.
    time.sleep(1.2)
    view = caps.get(f"/v1/rooms/{room['id']}").json()
    assert view["state"] == "dark" and view["dark_reason"] == "no_stream_worker", view

    caps.delete(f"/v1/rooms/{second.json()['id']}")
    assert caps.post("/v1/rooms", json={"username": "capC"}).status_code == 201
    _close_all_rooms(caps)


def test_room_beyond_stream_capacity_is_reported_not_silently_dark(caps):
    _close_all_rooms(caps)
    worker = caps.fleet.worker("stream")  # capacity 1 room
    try:
        a = caps.post("/v1/rooms", json={"username": "onair"}).json()
        wait_until(lambda: caps.get(f"/v1/rooms/{a['id']}").json()["publisher"], 30, what="a publisher")
        b = caps.post("/v1/rooms", json={"username": "nopub"}).json()

        def reported():
            events = caps.get(f"/v1/rooms/{b['id']}/events").json()
            return [e for e in events if e["event"] == "no_publisher"]

        events = wait_until(reported, 20, interval=0.3, what="a no_publisher event")
        assert events[0]["reason"] == "stream_capacity_full"
        view = caps.get(f"/v1/rooms/{b['id']}").json()
        assert view["state"] == "dark" and view["dark_reason"] == "stream_capacity_full" and not view["publisher"]
    finally:
        _close_all_rooms(caps)
        worker.terminate()
        worker.wait(timeout=20)


# ---- retention ----

def _file(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_janitor_deletes_expired_files_and_keeps_fresh_and_referenced_ones(redis_server, tmp_path):
    from core.rooms import RoomStore
    from core.settings import Settings

    url = redis_server.url(JANITOR_DB)
    Redis.from_url(url).flushdb()
    data = tmp_path / "data"
    hour = 3600
    old = _file(data / "tts" / "old.wav", 2 * hour)
    fresh = _file(data / "tts" / "fresh.wav")
    old_cached = _file(data / "tts" / "cache" / "aaaa.wav", 2 * hour)  # not used for 2 h: expired
    used_cached = _file(data / "tts" / "cache" / "bbbb.wav")  # a cache hit touched it
    upload = _file(data / "uploads" / "up.mp3", 2 * hour)
    part = _file(data / "uploads" / ".abc.wav.part", 2 * hour)
    new_part = _file(data / "uploads" / ".def.wav.part", 60)
    stock = _file(data / "lipsync" / "stock_demo_zh_96_abc.mp4", 2 * hour)
    avatar = data / "avatars" / "a1"
    frame = _file(avatar / "frames" / "00000.png", 30 * 24 * hour)
    bank = _file(avatar / "mouth" / "bank.npz", 30 * 24 * hour)
    stale_loop = _file(avatar / "idle-aaaa.pkts", 3 * hour)
    current_loop = _file(avatar / "idle-bbbb.pkts", 2 * hour)
    bank_tmp = _file(avatar / "mouth" / ".bank.tmp.npz", 2 * hour)
    building = _file(data / "avatars" / ".a2.building" / "frames" / "00000.png", 5 * hour).parent.parent
    os.utime(building / "frames", (time.time() - 5 * hour,) * 2)
    os.utime(building, (time.time() - 5 * hour,) * 2)

    settings = Settings(redis_url=url, data_dir=data)
    store = RoomStore(Redis.from_url(url), settings)
    room = store.create(username="janitor")
    referenced = _file(data / "tts" / "said.wav", 2 * hour)
    playing = _file(data / "uploads" / "playing.wav", 2 * hour)
    clip = _file(data / "lipsync" / f"{room.zbjname}_0.mp4", 2 * hour)
    store.say(room, audio="tts/said.wav", duration_s=1.0)
    store.say(room, audio="uploads/playing.wav", duration_s=1.0)
    store.take_utterance(room.id)  # tts/said.wav now in the playing list, uploads/playing.wav queued
    from core.jobs import Kind, enqueue

    queued_input = _file(data / "uploads" / "waiting.m4a", 2 * hour)
    enqueue(settings, store.r, Kind.asr, {"file": "uploads/waiting.m4a", "output_name": "x", "language": None},
            admit=False)  # no ASR worker here: it stays queued

    env = fleet_env(url, data, MTL_TTS_TTL_S="3600", MTL_UPLOADS_TTL_S="3600", MTL_LIPSYNC_TTL_S="3600",
                    MTL_TEMP_TTL_S="3600", MTL_IDLE_LOOP_TTL_S="3600")
    out = subprocess.run([sys.executable, "-m", "core.janitor", "once"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for gone in (old, old_cached, upload, part, stale_loop, bank_tmp, building):
        assert not gone.exists(), gone
    for kept in (fresh, used_cached, new_part, stock, frame, bank, current_loop, referenced, playing, clip,
                 queued_input):
        assert kept.exists(), kept
    assert set(out.stdout.split()) == {"tts/old.wav", "tts/cache/aaaa.wav", "uploads/up.mp3", "uploads/.abc.wav.part",
                                       "avatars/a1/idle-aaaa.pkts", "avatars/a1/mouth/.bank.tmp.npz",
                                       "avatars/.a2.building/"}

    # Once the room is closed its files expire like any other.
    store.close(room.id)
    subprocess.run([sys.executable, "-m", "core.janitor", "once"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)
    assert not referenced.exists() and not playing.exists() and not clip.exists()


def test_fleet_runs_the_janitor_and_redis_refuses_rather_than_evicts(redis_server):
    from core.fleet import supervisor_conf
    from core.settings import Settings

    conf = supervisor_conf(Settings())
    assert "[program:janitor]" in conf and "-m core.janitor run" in conf
    policy = Redis.from_url(redis_server.url(0)).config_get("maxmemory*")
    assert policy["maxmemory-policy"] == "noeviction" and int(policy["maxmemory"]) > 0


def test_rate_limiter_lets_requests_through_when_redis_is_away(tmp_path_factory):
    env = fleet_env(f"redis://127.0.0.1:{free_port()}/0", tmp_path_factory.mktemp("noredis"),
                    MTL_RATE_LIMIT="1/minute")
    with in_process_api(env) as client:
        for _ in range(3):  # over 1/minute, yet served: nothing counts, nothing is refused
            assert client.get("/tests/missing.wav").status_code == 404
        t0 = time.perf_counter()
        assert client.get("/tests/missing.wav").status_code == 404
        assert time.perf_counter() - t0 < 0.5  # counting paused: no wait on the missing Redis


def test_janitor_rotates_the_media_servers_own_logs(redis_server, tmp_path):
    url = redis_server.url(JANITOR_DB)
    logs = tmp_path / "data" / "media" / "logs"
    logs.mkdir(parents=True)
    (logs / "rtmp-access.log").write_text("new\n" * 50)
    (logs / "rtmp-access.log.1").write_text("older\n")
    (logs / "rtmp-access.log.2").write_text("oldest\n")
    (logs / "error.log").write_text("small\n")
    env = fleet_env(url, tmp_path / "data", MTL_LOG_MAX_BYTES="100", MTL_LOG_BACKUPS="2")
    subprocess.run([sys.executable, "-m", "core.janitor", "once"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)
    assert not (logs / "rtmp-access.log").exists()  # nginx reopens it on SIGUSR1
    assert (logs / "rtmp-access.log.1").read_text() == "new\n" * 50
    assert (logs / "rtmp-access.log.2").read_text() == "older\n"
    assert (logs / "error.log").read_text() == "small\n"
