"""`python -m core.fleet run|conf|redis|banner`: the whole fleet under supervisord, or the own Redis.

`run` writes ``<data_dir>/supervisor/supervisord.conf`` from the settings and replaces itself with
supervisord in the foreground (``-n``): every process (Redis, the media server, the API, each
worker kind scaled by ``MTL_*_WORKERS``) is restarted when it dies while the others keep serving,
each logs to its own file under ``<data_dir>/logs`` (rotated by supervisord), and Ctrl-C (or
SIGTERM) stops them in order: stream workers first (they hand their rooms back), Redis last.
``--data-dir`` (or ``MTL_DATA_DIR``) moves all of it, so a test can run a second fleet beside
the real one. ``supervisorctl -c <data_dir>/supervisor/supervisord.conf status`` shows the fleet.

Redis runs with the append-only file on, its data under ``<data_dir>/redis``, bound to loopback,
so queued jobs survive a restart of Redis or of the machine.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from core.credentials import own_redis_password, secrets_dir
from core.logs import setup_logging
from core.settings import PROJECT_ROOT, Settings, get_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# supervisord's unix socket path must fit in sockaddr_un (108 bytes on Linux).
MAX_SOCKET_PATH = 100

log = logging.getLogger("fleet")


def redis_argv(settings: Settings, port: int | None = None, data_dir=None, conf: Path | None = None) -> list[str]:
    """`conf`: a config file read first (the fleet's holds its requirepass, kept off the command line)."""
    port = port or urlparse(settings.redis_url).port or settings.redis_port
    data_dir = data_dir or settings.kind_dir("redis")
    argv = [shutil.which("redis-server") or "redis-server", *([str(conf)] if conf else []), "--bind", "127.0.0.1", "--port", str(port),
            "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no"]
    if settings.redis_maxmemory_mb > 0:
        # noeviction: past the limit writes fail loudly (the API answers 500/503) instead of Redis
        # silently evicting queued jobs, leases or rooms.
        argv += ["--maxmemory", f"{settings.redis_maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
    if settings.redis_password:
        argv += ["--requirepass", settings.redis_password]
    return argv


def local_redis(settings: Settings) -> bool:
    return urlparse(settings.redis_url).hostname in LOOPBACK


def run_redis(settings: Settings) -> int:
    if not local_redis(settings):
        log.error("MTL_REDIS_URL points at %s; not starting a local Redis", urlparse(settings.redis_url).hostname)
        return 1
    # exec: the supervisor's signals (SIGTERM: flush the append-only file and exit) reach Redis itself,
    # and the password stays out of the generated supervisord.conf and of the command line.
    argv = redis_argv(settings.model_copy(update={"redis_password": None}), conf=_redis_conf(settings))
    os.execv(argv[0], argv)


def _redis_conf(settings: Settings) -> Path | None:
    """A 0600 redis.conf with the password clients must give: the configured one, else the fleet's
    own, made at first start (core/credentials.py). None for an external Redis URL with its own."""
    password = settings.redis_password or own_redis_password(settings)
    if not password:
        return None
    path = secrets_dir(settings) / "redis.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"requirepass {password}\n")
    return path


def banner(settings: Settings) -> str:
    base = settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}"
    return "\n".join([
        "musetalk-live is starting (Ctrl-C stops everything)",
        f"  API           {base}",
        f"  OpenAPI docs  {base}/docs",
        f"  readiness     {base}/readyz",
        f"  media server  rtmp://{settings.media_public_host}:{settings.rtmp_port}/live/<stream_key>  "
        f"HLS http://{settings.media_public_host}:{settings.media_http_port}/hls/<stream_key>.m3u8",
        f"  logs          {settings.data_dir / 'logs'}/<process>.log",
        f"  processes     .venv/bin/supervisorctl -c {conf_path(settings)} status",
        "Try:",
        f"  curl -s '{base}/tts?msg=%E5%A4%A7%E5%AE%B6%E5%A5%BD%EF%BC%8C%E6%AC%A2%E8%BF%8E%E6%9D%A5%E5%88%B0%E7%9B%B4%E6%92%AD%E9%97%B4%E3%80%82'",
        f"  curl -s -X POST {base}/v1/tts -H 'Content-Type: application/json' "
        "-d '{\"text\": \"Hello, welcome to the live room.\"}'",
        "  then: curl -s " + base + "/v1/jobs/<job_id>   and   curl -sO " + base + "/tests/<id>.wav",
        f"  a live room:  curl -s '{base}/create/zbj?username=demo'   then   curl -s {base}/v1/rooms",
        "  (each room lists its rtmp/hls play URLs; `ffplay <rtmp url>` or open the .m3u8 in a player)",
        "",
    ])


# ---- supervisord configuration ----

def conf_path(settings: Settings) -> Path:
    return settings.data_dir / "supervisor" / "supervisord.conf"


def socket_path(settings: Settings) -> Path:
    path = settings.data_dir / "supervisor" / "supervisor.sock"
    if len(str(path)) > MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:16]
        path = Path("/tmp") / f"mtl-supervisor-{digest}.sock"
    return path


def _esc(value: object) -> str:
    # supervisord expands %(name)s in values: a literal % must be doubled.
    return str(value).replace("%", "%%")


def _command(*args: str) -> str:
    return _esc(" ".join(shlex.quote(str(a)) for a in args))


def _program_of(settings: Settings, name: str, command: str, *, numprocs: int | None = None, priority: int,
             stopwaitsecs: float, section: str = "program", extra: dict[str, str] | None = None,
             user: str | None = None) -> str:
    """One [program] section; a kind that scales (numprocs given) names its processes <kind>-<n>."""
    logs = settings.data_dir / "logs"
    process_name = "%(program_name)s" if numprocs is None else "%(program_name)s-%(process_num)d"
    options = {
        "command": command,
        "process_name": process_name,
        "numprocs": str(numprocs or 1),
        "directory": _esc(PROJECT_ROOT),
        "priority": str(priority),
        "autostart": "true",
        # Restart whatever exits, whatever its exit code: a worker's death is never intended.
        "autorestart": "true",
        "startsecs": "1",
        "startretries": "10",
        "stopsignal": "TERM",
        "stopwaitsecs": str(int(stopwaitsecs)),
        # A killed process's children (ffmpeg, nginx workers) go with it.
        "stopasgroup": "true",
        "killasgroup": "true",
        "redirect_stderr": "true",
        "stdout_logfile": _esc(logs) + "/" + process_name + ".log",
        "stdout_logfile_maxbytes": str(settings.log_max_bytes),
        "stdout_logfile_backups": str(settings.log_backups),
        # supervisord (root) drops to `user` for the process; HOME too, for the libraries' caches.
        **({"user": user, "environment": f'HOME="{_esc(settings.data_dir / "home")}"'} if user else {}),
        **(extra or {}),
    }
    return f"[{section}:{name}]\n" + "".join(f"{k}={v}\n" for k, v in options.items())


def batch_kinds() -> list[str]:
    """Every queue has its worker kind (a new kind is supervised without touching this file)."""
    from core.jobs import Kind

    return [k.value for k in Kind]


def _programs(settings: Settings, python: str, user: str | None = None) -> list[str]:
    grace = settings.worker_stop_grace_s + 10
    programs = []
    _program = functools.partial(_program_of, user=user)
    if local_redis(settings):
        programs.append(_program(settings, "redis", _command(python, "-m", "core.fleet", "redis"), priority=10,
                                 stopwaitsecs=20))
    programs.append(_program(settings, "media", _command(python, "-m", "core.mediaserver", "run"), priority=20,
                             stopwaitsecs=10))
    # supervisord owns the API's listening socket and hands it to every API process as fd 0, so
    # connections keep being accepted (or wait in the backlog) while one API process restarts.
    programs.append(_program(settings, "api", _command(python, "-m", "api", "--fd", "0"), section="fcgi-program",
                             numprocs=settings.api_processes, priority=30, stopwaitsecs=15,
                             extra={"socket": _esc(f"tcp://{settings.api_host}:{settings.api_port}"),
                                    "socket_backlog": "2048"}))
    for kind in batch_kinds():
        programs.append(_program(settings, kind, _command(python, "-m", "workers", kind),
                                 numprocs=getattr(settings, f"{kind}_workers", 1), priority=40, stopwaitsecs=grace))
    # Retention (core/janitor.py): one process, so a sweep never runs twice at once; sweeps at start.
    programs.append(_program(settings, "janitor", _command(python, "-m", "core.janitor", "run"), priority=45,
                             stopwaitsecs=10))
    # Stream workers stop first (highest priority number) so they hand rooms back while Redis is up.
    programs.append(_program(settings, "stream", _command(python, "-m", "workers", "stream"),
                             numprocs=settings.stream_workers, priority=50, stopwaitsecs=20))
    return programs


def supervisor_conf(settings: Settings, python: str | None = None, user: str | None = None) -> str:
    """supervisord.conf for the fleet; every path under the settings' data dir; `user`: the
    unprivileged user every program runs as (supervisord itself stays the starting user)."""
    python = python or sys.executable
    logs, sock = settings.data_dir / "logs", socket_path(settings)
    head = f"""\
; Generated by core/fleet.py from the settings at every `make run`; edits are overwritten.
[supervisord]
nodaemon=true
user={pwd.getpwuid(os.geteuid()).pw_name}
logfile={_esc(logs / "supervisord.log")}
logfile_maxbytes={settings.log_max_bytes}
logfile_backups={settings.log_backups}
pidfile={_esc(conf_path(settings).parent / "supervisord.pid")}
childlogdir={_esc(logs)}
loglevel=info

[unix_http_server]
file={_esc(sock)}
chmod=0700

[supervisorctl]
serverurl=unix://{_esc(sock)}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

; Keeps the API's listening socket open even while every API process restarts (see the module).
[rpcinterface:sockets]
supervisor.rpcinterface_factory = core.supervisor_sockets:make_interface

; The batch workers stop together (in parallel), each within its grace.
[group:workers]
programs={",".join(batch_kinds())}
priority=40
"""
    return head + "\n" + "\n".join(_programs(settings, python, user))


def write_conf(settings: Settings, user: str | None = None) -> Path:
    settings.kind_dir("supervisor")
    settings.kind_dir("logs")
    path = conf_path(settings)
    path.write_text(supervisor_conf(settings, user=user))
    return path


# ---- no root ----

def fleet_user(settings: Settings) -> str | None:
    """Started as root: the unprivileged user the fleet's processes run as (MTL_RUN_AS), created if
    missing. None when not root, when MTL_RUN_AS is empty, or (logged as an error) when that user
    could not run the fleet from here (the project or the data directory out of its reach)."""
    if os.geteuid() != 0 or not settings.run_as:
        return None
    user = settings.run_as
    try:
        pwd.getpwnam(user)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                               str(settings.data_dir / "home"), "--shell", "/usr/sbin/nologin", user],
                              capture_output=True, text=True)
        if done.returncode != 0:
            log.error("could not create the user %s (%s): the fleet runs as root", user, done.stderr.strip())
            return None
        log.info("created the unprivileged user %s for the fleet", user)
    return user if _usable_by(settings, user) else None


def _usable_by(settings: Settings, user: str) -> bool:
    """Give `user` the data directory, then check it can import the service and write there."""
    settings.kind_dir("home")
    subprocess.run(["chown", "-R", f"{user}:", str(settings.data_dir)], check=True)
    probe = ("import pathlib, sys, api.main, workers.base; p = pathlib.Path(sys.argv[1]) / 'home' / '.probe'; "
             "p.write_text('ok'); p.unlink()")
    done = subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", probe, str(settings.data_dir)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        log.error("the user %s cannot run the fleet from %s (%s): the fleet runs as root", user, PROJECT_ROOT, tail)
        return False
    return True


def run_fleet(settings: Settings) -> None:
    sys.stdout.write(banner(settings) + "\n")  # the command's own output, for the operator
    sys.stdout.flush()
    if local_redis(settings):
        own_redis_password(settings)  # made before any process starts, so every one finds it
    from core.metrics import ENV, metrics_dir

    # Prometheus multiprocess files of every process, one directory for the fleet, emptied at start
    # (files of processes from a previous run would otherwise be added to this run's counts).
    shutil.rmtree(metrics_dir(settings), ignore_errors=True)
    metrics_dir(settings).mkdir(parents=True, exist_ok=True)
    settings.kind_dir("supervisor")
    settings.kind_dir("logs")
    user = fleet_user(settings)  # after everything above is made: the user is given all of it
    conf = write_conf(settings, user)
    os.chdir(PROJECT_ROOT)
    # Children inherit this environment (settings, data dir); unbuffered so their logs are current.
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ[ENV] = str(metrics_dir(settings))
    # One BLAS thread per process: the fleet's parallelism is its processes (rooms, workers). With
    # OpenBLAS's default of one thread per core, each small solve of the lip-sync engine wakes a
    # second, spinning thread that competes with the other rooms: on this 2-core machine under load
    # the exemplar engine did 42-66 frames per CPU-second with 2 threads, 89-94 with 1.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)]
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.fleet")
    parser.add_argument("what", choices=["run", "conf", "redis", "banner"])
    parser.add_argument("--data-dir", help="where config, logs, Redis data and results go (MTL_DATA_DIR)")
    args = parser.parse_args(argv)
    if args.data_dir:
        os.environ["MTL_DATA_DIR"] = str(Path(args.data_dir).resolve())
        get_settings.cache_clear()
    settings = get_settings()
    setup_logging(settings.log_level)
    if args.what == "redis":
        return run_redis(settings)
    if args.what == "banner":
        sys.stdout.write(banner(settings) + "\n")
    elif args.what == "conf":
        sys.stdout.write(supervisor_conf(settings))
    else:
        run_fleet(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
