"""The fleet as `make run` starts it (`python -m core.fleet run`: supervisord and its generated
config) on free ports with a temporary data dir, and one process of each kind killed in turn.

Run it alone, with `-s` to see the measured restart times:
    .venv/bin/python -m pytest -s -p no:cacheprovider tests/test_supervision.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from conftest import ROOT, copy_demo_avatar, fleet_env, free_port, wait_until
from core.credentials import redis_password, stat_secret
from core.fleet import batch_kinds
from core.mediaserver import stat
from core.rooms import lease_key, stream_worker_loads
from core.settings import Settings

pytestmark = pytest.mark.slow

# ~50 s of speech (about 7 s of Piper's CPU): still running when the worker is killed or stopped right after
# it started, at half the synthesis of 19 sentences.
LONG_TEXT = " ".join(f"This is sentence number {i} of a long announcement for the live room, read slowly and clearly."
                     for i in range(1, 11))
SPEECH_TEXT = ("Welcome to the live room. Today we talk about digital humans, how they speak, "
               "and how they keep streaming when a process dies.")
MEASURED: dict[str, float] = {}


# ---- room state against a real Redis (fast; no fleet) ----

@pytest.fixture
def store(redis_server):
    from core.rooms import RoomStore
    from core.settings import Settings

    conn = Redis.from_url(redis_server.url(6))
    conn.flushdb()
    settings = Settings(redis_url=redis_server.url(6), stream_lease_s=2.0)
    return RoomStore(conn, settings)


def test_taken_utterance_survives_its_publisher_until_acknowledged(store):
    room = store.create(username="unit")
    a, b = store.say(room, audio="tts/a.wav"), store.say(room, audio="tts/b.wav")
    taken = store.take_utterance(room.id)
    assert taken.utterance == a and not taken.from_playing
    assert store.pending(room.id) == [b]
    # The publisher dies here: whoever takes the room next gets the same utterance again first.
    again = store.take_utterance(room.id)
    assert again.utterance == a and again.from_playing and again.raw == taken.raw
    store.ack_utterance(room.id, again)
    assert store.take_utterance(room.id).utterance == b


def test_interrupt_clears_what_plays_and_what_waits(store):
    room = store.create(username="unit")
    store.say(room, audio="tts/a.wav")
    store.say(room, audio="tts/b.wav")
    taken = store.take_utterance(room.id)
    store.interrupt(room.id)
    assert store.playing(room.id) == [] and store.pending(room.id) == []
    store.ack_utterance(room.id, taken)  # the publisher's late acknowledgement is harmless
    assert store.take_utterance(room.id) is None


def test_lease_is_exclusive_and_each_holder_gets_a_newer_fencing_token(store):
    from core.rooms import RoomLease, fence_token

    room = store.create(username="unit")
    first = RoomLease(store.r, room.id, "w1", 0.3)
    assert first.acquire() and first.token == 1
    assert not RoomLease(store.r, room.id, "w2", 0.3).acquire()
    time.sleep(0.4)  # w1 stalls past its lease
    second = RoomLease(store.r, room.id, "w2", 2.0)
    assert second.acquire() and second.token == 2 == fence_token(store.r, room.id)
    assert not first.renew()
    first.release()  # must not delete w2's lease
    assert store.r.get(lease_key(room.id)) == b"w2"


class _StubbornPublisher(threading.Thread):
    """A publisher that takes `linger_s` to stop (a slow RTMP close, a stuck encoder)."""

    def __init__(self, linger_s: float) -> None:
        super().__init__(daemon=True)
        self.linger_s = linger_s
        self.asked = threading.Event()

    def stop(self) -> None:
        self.asked.set()

    def run(self) -> None:
        self.asked.wait()
        time.sleep(self.linger_s)


def test_lease_is_kept_while_its_publisher_still_runs(store):
    from core.rooms import RoomLease
    from workers.stream import StreamWorker

    room = store.create(username="unit")
    worker = StreamWorker(store.settings, name="w1")
    lease = RoomLease(store.r, room.id, "w1", store.settings.stream_lease_s)
    assert lease.acquire()
    pub = _StubbornPublisher(linger_s=2.5)
    pub.start()
    worker.leases[room.id], worker.publishers[room.id] = lease, pub
    worker._drop(room.id, reason="test", join_s=0.1)
    for _ in range(8):  # longer than the 2 s lease: still held, renewed for the running publisher
        time.sleep(0.25)
        worker._reap_draining()
        assert store.r.get(lease_key(room.id)) == b"w1"
    pub.join()
    worker._reap_draining()
    assert store.r.get(lease_key(room.id)) is None


def test_publisher_stops_when_its_fencing_token_is_superseded(store):
    from core.rooms import RoomLease
    from workers.stream import IdleLoops, RoomPublisher

    room = store.create(username="unit")
    lease = RoomLease(store.r, room.id, "w1", 0.2)
    assert lease.acquire()
    pub = RoomPublisher(room, store.settings, store.r, "w1", IdleLoops(store.settings), lease.token)
    assert pub._fence_ok()
    time.sleep(0.3)
    assert RoomLease(store.r, room.id, "w2", 2.0).acquire()
    assert not pub._fence_ok() and pub.stop_event.is_set()
    assert [e["event"] for e in store.events(room.id)][-1] == "fenced"


# ---- the supervised fleet ----

@dataclass
class SupervisedFleet:
    proc: subprocess.Popen
    data_dir: Path
    api: httpx.Client
    redis: Redis
    rpc: xmlrpc.client.ServerProxy
    media_http_port: int

    def info(self, name: str) -> dict:
        return self.rpc.supervisor.getProcessInfo(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> tuple[int, float]:
        pid = self.info(name)["pid"]
        os.kill(pid, sig)
        return pid, time.monotonic()

    def wait_restarted(self, name: str, old_pid: int, since: float, timeout: float = 60) -> float:
        def back():
            info = self.info(name)
            return info["statename"] == "RUNNING" and info["pid"] not in (0, old_pid)

        wait_until(back, timeout, interval=0.05, what=f"{name} to run again")
        return time.monotonic() - since

    def publishing(self, key: str) -> bool:
        try:
            info = stat(self.media_http_port, timeout=1.0, secret=stat_secret(Settings(data_dir=self.data_dir))).get(key)
        except OSError:
            return False
        return bool(info and info.get("publishing"))

    def events(self, room_id: str) -> list[dict]:
        r = self.api.get(f"/v1/rooms/{room_id}/events")
        return r.json() if r.status_code == 200 else []

    def job(self, job_id: str) -> dict:
        return self.api.get(f"/v1/jobs/{job_id}").json()

    def wait_job(self, job_id: str, timeout: float = 180) -> dict:
        return wait_until(lambda: (v := self.job(job_id))["status"] in ("finished", "failed") and v, timeout,
                          interval=0.2, what=f"job {job_id}")

    def wait_started(self, job_id: str, timeout: float = 120) -> None:
        wait_until(lambda: self.job(job_id)["status"] in ("started", "finished", "failed"), timeout, interval=0.05,
                   what=f"job {job_id} to start")
        assert self.job(job_id)["status"] == "started", "the job ended before it could be interrupted"


def _rpc(data_dir: Path) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport

    from core.fleet import socket_path
    from core.settings import Settings

    sock = socket_path(Settings(data_dir=data_dir))
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _dump_logs(data_dir: Path) -> None:
    for log in sorted((data_dir / "logs").glob("*.log")):
        sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}\n")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, llm_stub):
    # Not under pytest's temp root (0700): started as root the fleet runs as an unprivileged user,
    # which is given the data directory and must be able to reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="mtl-fleet-"))
    redis_port, api_port = free_port(), free_port()
    env = fleet_env(f"redis://127.0.0.1:{redis_port}/0", data_dir, MTL_API_PORT=str(api_port),
                    MTL_RTMP_PORT=str(free_port()), MTL_MEDIA_HTTP_PORT=str(free_port()),
                    MTL_STREAM_LEASE_S="4", MTL_WORKER_STOP_GRACE_S="1", MTL_API_PROCESSES="2",
                    MTL_STREAM_WORKERS="2", MTL_LLM_URL=llm_stub.url)
    # As `make run` does: the demo avatar first (`python -m avatars demo`, built once per test run and
    # copied, as for the session fleets), then the fleet in the foreground.
    copy_demo_avatar(tmp_path_factory, env, data_dir)
    out = (data_dir / "fleet.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "core.fleet", "run", "--data-dir", str(data_dir)], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    # No kept-alive connections: one may belong to an API process a test has just killed.
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30,
                       limits=httpx.Limits(max_keepalive_connections=0))
    try:
        wait_until(lambda: _ready(api), 240, interval=0.5, what="the supervised fleet to be ready")
    except AssertionError:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        _dump_logs(data_dir)
        raise
    # The fleet's own Redis wants the password it made at its first start (results/secrets/redis).
    password = redis_password(Settings(data_dir=data_dir, redis_url=env["MTL_REDIS_URL"]))
    yield SupervisedFleet(proc=proc, data_dir=data_dir, api=api, redis=Redis(port=redis_port, password=password),
                          rpc=_rpc(data_dir),
                          media_http_port=int(env["MTL_MEDIA_HTTP_PORT"]))
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    api.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    sys.stderr.write("\nmeasured (s): " + json.dumps({k: round(v, 2) for k, v in MEASURED.items()}) + "\n")


@pytest.fixture(scope="module")
def room(fleet) -> dict:
    r = fleet.api.post("/v1/rooms", json={"username": "supervised"})
    assert r.status_code == 201, r.text
    room = r.json()
    wait_until(lambda: fleet.publishing(room["stream_key"]), 60, what="the room to publish")
    return room


@pytest.fixture(scope="module")
def speech(fleet) -> str:
    """A TTS file of ~8 s the rooms, ASR and lip-sync jobs use."""
    job = fleet.wait_job(fleet.api.post("/v1/tts", json={"text": SPEECH_TEXT}).json()["job_id"])
    assert job["status"] == "finished", job
    return job["result"]["file"]


def _still_publishing(fleet, room) -> None:
    wait_until(lambda: fleet.publishing(room["stream_key"]), 10, interval=0.1, what="the room to publish")


def test_every_process_runs_under_supervisord_with_its_own_log(fleet, room):
    names = {p["name"]: p for p in fleet.rpc.supervisor.getAllProcessInfo()}
    from core.settings import Settings

    scaled = Settings()  # the defaults `make run` scales each kind by
    assert set(names) == {"redis", "media", "api-0", "api-1", "stream-0", "stream-1", "janitor",
                          *(f"{kind}-{n}" for kind in batch_kinds() for n in range(getattr(scaled, f"{kind}_workers")))}
    assert all(p["statename"] == "RUNNING" for p in names.values()), names
    for name in names:
        assert (fleet.data_dir / "logs" / f"{name}.log").is_file(), name
    assert (fleet.data_dir / "supervisor" / "supervisord.conf").is_file()
    # core/supervisor_sockets.py: the API's socket stays open while every API process restarts.
    assert fleet.rpc.sockets.held() == ["api"]
    # bench/room_capacity finds the stream workers by their command line.
    out = subprocess.run(["pgrep", "-f", "python -m workers stream"], capture_output=True, text=True).stdout.split()
    assert {names["stream-0"]["pid"], names["stream-1"]["pid"]} <= {int(p) for p in out}


def test_started_as_root_the_fleet_runs_unprivileged(fleet):
    """Every process but supervisord runs as MTL_RUN_AS (musetalk), which owns the data directory."""
    if os.geteuid() != 0:
        pytest.skip("only a fleet started as root changes user")
    refused = [line for line in (fleet.data_dir / "fleet.out").read_text(errors="replace").splitlines()
               if "the fleet runs as root" in line]
    if refused:  # e.g. the interpreter lives under /root (pyenv), which the user cannot reach
        pytest.skip(refused[0].split("ERROR", 1)[-1].strip())
    users = {p["name"]: subprocess.run(["ps", "-o", "user=", "-p", str(p["pid"])], capture_output=True,
                                       text=True).stdout.strip() for p in fleet.rpc.supervisor.getAllProcessInfo()}
    assert set(users.values()) == {"musetalk"}, users
    assert subprocess.run(["ps", "-o", "user=", "-p", str(fleet.proc.pid)], capture_output=True,
                          text=True).stdout.strip() == "root"  # supervisord itself
    assert fleet.data_dir.owner() == "musetalk" and (fleet.data_dir / "secrets").owner() == "musetalk"
    # Their children too: the media server's nginx worker.
    nginx = subprocess.run(["pgrep", "-g", str(fleet.info("media")["pid"])], capture_output=True, text=True).stdout.split()
    assert nginx and {subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True).stdout.strip()
                      for pid in nginx} == {"musetalk"}


def test_the_fleets_redis_wants_its_password(fleet):
    """Made at the first start, kept 0600 under results/secrets; never on a command line."""
    port = fleet.redis.connection_pool.connection_kwargs["port"]
    anonymous = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=10)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
    assert fleet.redis.ping()
    secret = fleet.data_dir / "secrets" / "redis"
    assert oct(secret.stat().st_mode & 0o777) == "0o600" and oct(secret.parent.stat().st_mode & 0o777) == "0o700"
    pid = fleet.info("redis")["pid"]
    assert secret.read_text().strip() not in Path(f"/proc/{pid}/cmdline").read_text()
    assert secret.read_text().strip() not in (fleet.data_dir / "supervisor" / "supervisord.conf").read_text()


def test_the_tts_worker_caches_the_replies_opening_phrases_at_start(fleet):
    """A fleet started as `make run` starts it (with its default, MTL_TTS_WARM_PHRASES on) has the speech
    of every fixed piece a reply begins with in the TTS cache without being asked for it (the session
    fleets of tests/conftest.py skip this warm-up: this is where it is tested)."""
    from core.conversations.responders import opening_phrases
    from workers.tts import cache_key, plan_segments

    settings = Settings(data_dir=fleet.data_dir)  # the fleet's TTS settings are the defaults
    cache = fleet.data_dir / "tts" / "cache"  # built by hand: kind_dir would make it, as this user
    expected = [cache / f"{cache_key(settings, plan_segments(text, language), None)}.wav"
                for text, language in opening_phrases(settings.reply_first_clause_chars)]
    assert len(expected) >= 10
    wait_until(lambda: all(path.is_file() for path in expected), 120, interval=0.5,
               what="the opening phrases in the TTS cache")
    # The worker logs once the last phrase's WAV is in place, so the line may come a moment after it.
    log_file = fleet.data_dir / "logs" / "tts-0.log"
    wait_until(lambda: "opening phrases cached" in log_file.read_text(errors="replace"), 10, interval=0.2,
               what="the worker to log the opening phrases cached")


def _answers(base_url: str, timeout: float = 5) -> bool:
    # A new connection each time: a kept-alive one may belong to the killed process.
    try:
        return httpx.get(f"{base_url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def test_killed_api_keeps_answering(fleet, room):
    base = str(fleet.api.base_url).rstrip("/")
    pid, killed = fleet.kill("api:api-0")
    wait_until(lambda: _answers(base), 5, interval=0.05, what="the API to answer")
    MEASURED["api_restart"] = fleet.wait_restarted("api:api-0", pid, killed)
    # Both API processes at once: the listening socket stays open (core/supervisor_sockets.py), so a
    # request waits in its backlog for the restarted API instead of being refused.
    old = {n: fleet.kill(f"api:{n}")[0] for n in ("api-0", "api-1")}
    killed = time.monotonic()
    # The bound allows for `make test`'s three workers with their fleets on two cores (both APIs
    # restarting then took 6 s to over 10 s; alone, within 5 s; over 20 s with other load on the machine):
    # what matters is that the request waits and is answered, not refused (refused is at once).
    assert _answers(base, timeout=60)
    MEASURED["api_both_killed_answer"] = time.monotonic() - killed
    assert MEASURED["api_both_killed_answer"] <= 60.0
    for name, pid in old.items():
        fleet.wait_restarted(f"api:{name}", pid, killed)
    _still_publishing(fleet, room)


def _submit(fleet, kind: str, speech: str) -> str:
    if kind == "tts":
        # Unique text: TTS caches by content, and a cached job would end before the kill.
        r = fleet.api.post("/v1/tts", json={"text": f"{LONG_TEXT} Take {uuid.uuid4().hex[:8]}."})
    elif kind == "asr":
        r = fleet.api.post("/v1/asr", data={"source": speech})
    elif kind == "avatar":
        from skimage import data

        ok, png = cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
        r = fleet.api.post("/v1/avatars", files={"file": ("portrait.png", png.tobytes(), "image/png")})
    else:
        r = fleet.api.post("/v1/lipsync", json={"avatar_id": "demo", "audio": speech, "engine": "warp"})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


@pytest.mark.parametrize("kind", ["tts", "asr", "avatar", "lipsync"])
def test_killed_worker_is_restarted_and_its_job_finishes(fleet, room, speech, kind):
    job_id = _submit(fleet, kind, speech)
    fleet.wait_started(job_id)
    pid, killed = fleet.kill(f"workers:{kind}-0")
    MEASURED[f"{kind}_restart"] = fleet.wait_restarted(f"workers:{kind}-0", pid, killed)
    view = fleet.wait_job(job_id)
    assert view["status"] == "finished", view
    MEASURED[f"{kind}_job_done_after_kill"] = time.monotonic() - killed
    job = Job.fetch(job_id, connection=fleet.redis, serializer=JSONSerializer)
    assert job.meta["recoveries"] == 1  # requeued once, by the dead-worker recovery
    _still_publishing(fleet, room)


def test_killed_converse_worker_mid_reply_finishes_it_without_repeating_a_sentence(fleet, llm_stub):
    reply = "好的。" + "".join(f"第{n}点，我们来谈谈这个项目的设计。" for n in "一二三四五")
    llm_stub.clear()
    llm_stub.then_stream(reply=reply, token_delay_s=0.3).then_stream(reply=reply, token_delay_s=0.05)
    room = fleet.api.post("/v1/rooms", json={"username": "converse_kill", "responder": "llm"}).json()
    wait_until(lambda: fleet.publishing(room["stream_key"]), 30, what="the room to publish")
    sent = fleet.api.post(f"/v1/rooms/{room['id']}/messages", json={"text": "请讲讲你的项目。"}).json()
    wait_until(lambda: _find(fleet, room, "speech_start", sentence=0), 30, interval=0.05,
               what="the reply to start speaking")
    job = Job.fetch(sent["job_id"], connection=fleet.redis, serializer=JSONSerializer)
    assert job.get_status() == "started", "the turn ended before it could be killed"
    pid = int(job.worker_name.split(".")[-2])  # workers are named <kind>.<host>.<pid>.<suffix>
    name = next(f"{p['group']}:{p['name']}" for p in fleet.rpc.supervisor.getAllProcessInfo() if p["pid"] == pid)
    _, killed = fleet.kill(name)
    done = fleet.wait_job(sent["job_id"], timeout=90)
    assert done["status"] == "finished" and done["result"]["status"] == "complete", done
    MEASURED["converse_turn_done_after_kill"] = time.monotonic() - killed
    messages = wait_until(lambda: (m := fleet.api.get(f"/v1/rooms/{room['id']}/messages").json())
                          and m[-1]["status"] == "spoken" and m, 90, interval=0.3, what="the whole reply spoken")
    assert [m["role"] for m in messages] == ["user", "assistant"], "the recovered turn made a second reply"
    assert messages[-1]["text"] == reply
    started = [e["sentence"] for e in fleet.events(room["id"]) if e["event"] == "speech_start"
               and e.get("message") == messages[-1]["id"]]
    assert started == list(range(len(messages[-1]["sentences"]))), started  # each sentence once, in order
    fleet.wait_restarted(name, pid, killed)
    fleet.api.delete(f"/v1/rooms/{room['id']}")


def test_sigterm_worker_puts_its_job_back_and_it_finishes(fleet):
    job_id = _submit(fleet, "tts", "")
    fleet.wait_started(job_id)
    pid, stopped = fleet.kill("workers:tts-0", signal.SIGTERM)  # grace is 1 s here; the job takes longer
    fleet.wait_restarted("workers:tts-0", pid, stopped)
    assert fleet.wait_job(job_id)["status"] == "finished"
    job = Job.fetch(job_id, connection=fleet.redis, serializer=JSONSerializer)
    assert "recoveries" not in job.meta  # put back by the stopping worker, not recovered from a death
    log = (fleet.data_dir / "logs" / "tts-0.log").read_text()
    assert f"job {job_id} put back at the front of the queue" in log


def _say(fleet, room, audio: str) -> str:
    r = fleet.api.post(f"/v1/rooms/{room['id']}/say", json={"audio": audio})
    assert r.status_code == 202, r.text
    return r.json()["utterance_id"]


def _find(fleet, room, name: str, n: int = 1, **match) -> list[dict]:
    """Wait-free: events `name` matching the fields, or [] when fewer than n."""
    found = [e for e in fleet.events(room["id"]) if e["event"] == name
             and all(e.get(k) == v for k, v in match.items())]
    return found if len(found) >= n else []


def _owner(fleet, room) -> tuple[str, int, str]:
    """The stream worker publishing the room: its name, pid and supervisor process name."""
    owner = wait_until(lambda: fleet.api.get(f"/v1/rooms/{room['id']}").json()["publisher"], 10, what="a lease")
    pid = int(owner.split(".")[-2])
    name = next(f"{p['group']}:{p['name']}" for p in fleet.rpc.supervisor.getAllProcessInfo() if p["pid"] == pid)
    return owner, pid, name


def _stream_workers_ticking(fleet) -> None:
    """Every stream worker process takes rooms (its heartbeat, named with its pid, is in Redis): one
    restarted by an earlier test is RUNNING for supervisord well before that on a loaded machine, and
    a room handed over then waits for it (seen: no lease within 20 s at load 12)."""
    def ticking():
        pids = {str(p["pid"]) for p in fleet.rpc.supervisor.getAllProcessInfo() if p["name"].startswith("stream-")}
        return pids <= {name.split(".")[-2] for name in stream_worker_loads(fleet.redis)}

    wait_until(ticking, 60, interval=0.1, what="every stream worker to take rooms")


def test_killed_stream_worker_replays_the_interrupted_utterance(fleet, room, speech):
    _stream_workers_ticking(fleet)
    short = fleet.wait_job(fleet.api.post("/v1/tts", json={"text": "Hello."}).json()["job_id"])["result"]["file"]
    first = _say(fleet, room, short)
    wait_until(lambda: _find(fleet, room, "speech_end", utterance=first), 30, interval=0.1, what="the first to end")
    second = _say(fleet, room, speech)
    wait_until(lambda: _find(fleet, room, "speech_start", utterance=second), 30, interval=0.05, what="speech")
    owner, pid, name = _owner(fleet, room)
    time.sleep(1.5)  # well inside the utterance
    tokens = {e["token"] for e in _find(fleet, room, "leased")}
    _, killed = fleet.kill(name)

    def resumed():
        later = [e for e in _find(fleet, room, "session_start") if e["token"] > max(tokens)]
        return later and fleet.publishing(room["stream_key"])

    wait_until(resumed, 10, interval=0.05, what="publishing to resume under a new lease")
    MEASURED["stream_kill_publishing_resumed"] = time.monotonic() - killed
    replay = wait_until(lambda: _find(fleet, room, "speech_start", 2, utterance=second), 10, interval=0.05,
                        what="the interrupted utterance to play again")[-1]
    assert replay["replay"] is True
    wait_until(lambda: _find(fleet, room, "speech_end", utterance=second), 30, interval=0.1, what="the replay to end")
    assert len(_find(fleet, room, "speech_start", utterance=first)) == 1, "a finished utterance played again"
    assert len(_find(fleet, room, "speech_start", utterance=second)) == 2
    assert fleet.api.get(f"/v1/rooms/{room['id']}").json()["publisher"] != owner
    fleet.wait_restarted(name, pid, killed)


def test_sigterm_stream_worker_hands_its_room_over(fleet, room, speech):
    _stream_workers_ticking(fleet)
    playing = _say(fleet, room, speech)
    wait_until(lambda: _find(fleet, room, "speech_start", utterance=playing), 30, interval=0.05, what="speech")
    queued = _say(fleet, room, speech)
    owner, pid, name = _owner(fleet, room)
    token = max(e["token"] for e in _find(fleet, room, "leased", worker=owner))
    _, stopped = fleet.kill(name, signal.SIGTERM)
    wait_until(lambda: _find(fleet, room, "handed_back", worker=owner), 20, interval=0.05, what="the hand-back")
    # The next lease is the one with a newer fencing token. Not "leased after handed_back": the event
    # is written once every publisher has stopped, and another worker may take a room released before
    # it (a race this test lost under load: the new lease came first and was never counted).
    wait_until(lambda: [e for e in _find(fleet, room, "leased") if e["token"] > token and e["worker"] != owner], 20,
               interval=0.05, what="another worker to lease the room")
    MEASURED["stream_sigterm_room_leased_again"] = time.monotonic() - stopped
    # Handed back, not expired: leased again well before the 4 s lease could have run out.
    assert MEASURED["stream_sigterm_room_leased_again"] < 3.0
    replay = wait_until(lambda: _find(fleet, room, "speech_start", 2, utterance=playing), 10, interval=0.05,
                        what="the playing utterance to restart on the new worker")[-1]
    assert replay["replay"] is True
    wait_until(lambda: _find(fleet, room, "speech_end", utterance=queued), 60, interval=0.1,
               what="the queued utterance to play")
    fleet.wait_restarted(name, pid, stopped)


def test_killed_redis_keeps_queued_jobs(fleet, room):
    fleet.rpc.supervisor.stopProcess("workers:tts-0")  # so the jobs stay queued
    ids = [fleet.api.post("/v1/tts", json={"text": f"Queued sentence {i}."}).json()["job_id"] for i in range(2)]
    time.sleep(1.5)  # appendfsync everysec
    pid, killed = fleet.kill("redis")
    wait_until(lambda: fleet.api.get("/readyz").json().get("redis") == "ok", 10, interval=0.05,
               what="Redis back for the API")
    MEASURED["redis_back_for_api"] = time.monotonic() - killed
    assert [fleet.job(i)["status"] for i in ids] == ["queued", "queued"]
    fleet.rpc.supervisor.startProcess("workers:tts-0")
    for i in ids:
        assert fleet.wait_job(i)["status"] == "finished"
    _still_publishing(fleet, room)
    wait_until(lambda: _ready(fleet.api), 30, interval=0.2, what="the whole fleet ready again")


def test_killed_media_server_is_back_and_publishing_resumes(fleet, room):
    media = fleet.data_dir / "media"
    pid, killed = fleet.kill("media")
    MEASURED["media_restart"] = fleet.wait_restarted("media", pid, killed, timeout=10)
    new_pid = fleet.info("media")["pid"]
    # Not the killed master's orphaned worker answering: nginx.pid names the new master.
    wait_until(lambda: (media / "nginx.pid").read_text().strip() == str(new_pid), 10, what="the new nginx")
    wait_until(lambda: fleet.publishing(room["stream_key"]), 10, interval=0.05, what="publishing to resume")
    MEASURED["media_kill_publishing_resumed"] = time.monotonic() - killed
    assert MEASURED["media_kill_publishing_resumed"] <= 10.0


def test_ctrl_c_stops_everything(fleet, room):
    pids = [p["pid"] for p in fleet.rpc.supervisor.getAllProcessInfo()]
    fleet.proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    assert fleet.proc.wait(60) == 0
    MEASURED["ctrl_c_stop"] = time.monotonic() - interrupted

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert all(gone(p) for p in pids)
    with pytest.raises(httpx.HTTPError):
        fleet.api.get("/healthz", timeout=2)
