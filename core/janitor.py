"""`python -m core.janitor run|once`: retention of the files under the data directory.

Deletes what has outlived its settings:

- results in ``<data_dir>/<kind>/`` (tts, asr, uploads, lipsync, feedback) older than ``MTL_<KIND>_TTL_S``,
  by modification time, except a file an open room still has queued or playing (its utterances'
  ``audio``/``clip`` and the speech of its pending TTS jobs), an input of a job not finished yet,
  the clips of an open interview room
  (``<zbjname>_<i>.*``) and the stock clips (``stock_*``, rendered once per avatar and reused);
- temp files left by a crash (``.*.part`` uploads, ``.*`` partial writes) older than ``MTL_TEMP_TTL_S``;
- superseded idle-loop packets of an avatar (every ``idle-*.pkts`` but its newest) older than
  ``MTL_IDLE_LOOP_TTL_S``. Nothing else under ``avatars/`` (frames, masks, mouth banks) is ever touched.

It also rotates the media server's own logs (nginx's error and RTMP access logs) at ``MTL_LOG_MAX_BYTES``
(keeping ``MTL_LOG_BACKUPS``; nginx reopens them on SIGUSR1); supervisord rotates every process's log.

Why a process of its own (the fleet's ``janitor`` program) rather than a task in the API or a worker:
the API runs several processes and the workers several per kind, so a task there would run N times
and compete; one small supervised process sweeps once at start-up, then every ``MTL_JANITOR_INTERVAL_S``,
and its failure touches nothing that serves requests or streams.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from core.files import FileOwners
from core.rooms import RoomStore
from core.settings import Settings, get_settings

log = logging.getLogger("janitor")

RESULT_KINDS = ("tts", "asr", "uploads", "lipsync", "feedback")
# Content caches inside a kind's directory, expired with that kind's TTL counted from their last use
# (a hit touches the entry); an output hard-linked to an entry keeps its own lifetime.
CACHES = {"tts/cache": "tts"}


@dataclass
class Sweep:
    deleted: list[str] = field(default_factory=list)
    kept_referenced: int = 0
    freed_bytes: int = 0
    rotated: list[str] = field(default_factory=list)


def referenced(settings: Settings, redis: Redis) -> tuple[set[str], tuple[str, ...]]:
    """`<kind>/<name>` files open rooms still need, and the name prefixes of their interview clips."""
    store = RoomStore(redis, settings)
    refs: set[str] = set()
    prefixes: list[str] = []
    for room in store.list():
        if not store.is_open(room.id):
            continue
        prefixes.append(f"{room.zbjname}_")
        for utterance in store.pending(room.id) + store.playing(room.id):
            refs |= {ref for ref in (utterance.audio, utterance.clip) if ref}
            if utterance.tts_job_id:
                refs.add(f"tts/{utterance.tts_job_id}.wav")
    refs |= job_inputs(redis)
    return refs, tuple(prefixes)


def job_inputs(redis: Redis) -> set[str]:
    """`<kind>/<name>` inputs of jobs not finished yet (queued, waiting on a dependency, running):
    an upload waiting in a long queue outlives its TTL rather than failing its job. Bounded by the
    queue caps (core/limits.py)."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from core.jobs import Kind, get_queue

    refs: set[str] = set()
    for kind in Kind:
        queue = get_queue(kind, redis)
        ids = [*queue.get_job_ids(), *queue.started_job_registry.get_job_ids(cleanup=False),
               *queue.deferred_job_registry.get_job_ids(cleanup=False)]
        for job in Job.fetch_many(ids, connection=redis, serializer=JSONSerializer) if ids else []:
            for value in ((job.kwargs or {}).values() if job is not None else ()):
                if isinstance(value, str) and value.count("/") == 1:
                    refs.add(value)
    return refs


def _remove(path: Path, result: Sweep, data_dir: Path) -> None:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return
    result.deleted.append(str(path.relative_to(data_dir)))
    result.freed_bytes += size


def sweep(settings: Settings, redis: Redis, now: float | None = None) -> Sweep:
    now = time.time() if now is None else now
    data_dir = settings.data_dir
    result = Sweep()
    refs, prefixes = referenced(settings, redis)
    for kind in RESULT_KINDS:
        directory = data_dir / kind
        if not directory.is_dir():
            continue
        ttl = int(getattr(settings, f"{kind}_ttl_s"))
        for entry in os.scandir(directory):
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            name = entry.name
            if name.startswith(".") or name.endswith((".part", ".tmp")):
                if age > settings.temp_ttl_s:
                    _remove(Path(entry.path), result, data_dir)
                continue
            if age <= ttl or name.startswith("stock_"):
                continue
            if f"{kind}/{name}" in refs or name.startswith(prefixes):
                result.kept_referenced += 1
                continue
            _remove(Path(entry.path), result, data_dir)
    for cache, kind in CACHES.items():
        _sweep_cache(data_dir / cache, int(getattr(settings, f"{kind}_ttl_s")), now, result, data_dir)
    _sweep_avatars(settings, now, result)
    # Owner records of files now gone; a job's are kept while it may still write its files.
    FileOwners(redis).prune(data_dir, settings.result_ttl_s + settings.job_timeout_s, now)
    rotate_media_logs(settings, result)
    return result


def _sweep_cache(directory: Path, ttl: int, now: float, result: Sweep, data_dir: Path) -> None:
    if not directory.is_dir():
        return
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > ttl:
            _remove(Path(entry.path), result, data_dir)


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(base, name)).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def _remove_tree(path: Path, result: Sweep, data_dir: Path) -> None:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    shutil.rmtree(path, ignore_errors=True)
    result.deleted.append(str(path.relative_to(data_dir)) + "/")
    result.freed_bytes += size


def _sweep_avatars(settings: Settings, now: float, result: Sweep) -> None:
    """Only crash leftovers and superseded caches; an avatar's own files are never touched."""
    root = settings.data_dir / "avatars"
    if not root.is_dir():
        return
    # A preparation killed mid-way leaves .<id>.building / .<id>.old (avatars/prepare.py) and
    # .mouth.building (workers/avatar.py): gone once nothing in them changed for 4 temp TTLs.
    stale_dir_s = 4 * settings.temp_ttl_s
    for leftover in [*root.glob(".*"), *root.glob("*/.*.building")]:
        if leftover.is_dir() and not leftover.is_symlink() and now - _newest_mtime(leftover) > stale_dir_s:
            _remove_tree(leftover, result, settings.data_dir)
    for avatar in root.iterdir():
        if not avatar.is_dir() or avatar.name.startswith("."):
            continue
        for tmp in (avatar / "mouth").glob(".*"):  # e.g. .bank.tmp.npz of a killed enrollment
            if tmp.is_file() and now - tmp.stat().st_mtime > settings.temp_ttl_s:
                _remove(tmp, result, settings.data_dir)
        loops = sorted(avatar.glob("idle-*.pkts"), key=lambda p: p.stat().st_mtime)
        for old in loops[:-1]:  # the newest is the one in use
            if now - old.stat().st_mtime > settings.idle_loop_ttl_s:
                _remove(old, result, settings.data_dir)
        for tmp in [*avatar.glob(".idle-*"), *avatar.glob(".enrollment-sample*")]:  # killed before its rename
            if now - tmp.stat().st_mtime > settings.temp_ttl_s:
                _remove(tmp, result, settings.data_dir)


def rotate_media_logs(settings: Settings, result: Sweep) -> None:
    """Rename nginx's logs over MTL_LOG_MAX_BYTES (<log>.1 .. .N) and have nginx reopen them."""
    logs = settings.data_dir / "media" / "logs"
    if settings.log_max_bytes <= 0 or not logs.is_dir():
        return
    rotated = False
    for path in logs.glob("*.log"):
        if path.stat().st_size <= settings.log_max_bytes:
            continue
        for n in range(settings.log_backups, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if n == settings.log_backups:
                older.unlink(missing_ok=True)
            else:
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{n + 1}"))
        if settings.log_backups > 0:
            path.replace(path.with_name(f"{path.name}.1"))
        else:
            path.unlink()
        result.rotated.append(path.name)
        rotated = True
    if rotated:
        try:
            pid = int((settings.data_dir / "media" / "nginx.pid").read_text().strip())
            os.kill(pid, signal.SIGUSR1)  # nginx reopens its log files
        except (OSError, ValueError):
            log.warning("rotated media logs but could not signal nginx to reopen them")


def run(settings: Settings, redis: Redis, stop: threading.Event) -> None:
    log.info("janitor up: sweeping %s every %.0f s", settings.data_dir, settings.janitor_interval_s)
    while not stop.is_set():
        try:
            result = sweep(settings, redis)
            if result.deleted or result.rotated:
                log.info("deleted %d files (%.1f MB), kept %d still referenced, rotated %s",
                         len(result.deleted), result.freed_bytes / 1e6, result.kept_referenced, result.rotated or "-")
        except Exception:
            log.exception("sweep failed; retrying at the next interval")
        stop.wait(settings.janitor_interval_s)


def main(argv: list[str] | None = None) -> int:
    from core.jobs import redis_connection
    from core.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m core.janitor")
    parser.add_argument("what", choices=["run", "once"])
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level)
    redis = redis_connection(settings)
    if args.what == "once":
        result = sweep(settings, redis)
        sys.stdout.write("\n".join(result.deleted) + ("\n" if result.deleted else ""))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, redis, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
