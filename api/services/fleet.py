"""What the fleet is doing: readiness (GET /readyz) and the operators' view (GET /v1/fleet)."""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone

from api.schemas.rooms import SYSTEM_PROMPT_CHARS
from core import keys, procstat
from core.jobs import Kind, alive_workers, fetch_job, get_queue
from core.limits import free_disk_bytes, open_rooms_cap, queue_cap, queue_depth
from core.rooms import RoomStore, stream_worker_loads


def readiness(redis) -> tuple[bool, dict]:
    try:
        redis.ping()
    except Exception as exc:
        return False, {"redis": f"unreachable: {exc}", "queues": {}}
    queues = {}
    for kind in Kind:
        queue = get_queue(kind, redis)
        queues[kind.value] = {"workers": len(alive_workers(redis, queue)), "queued": queue.count}
    streams = len(stream_worker_loads(redis))
    ready = all(q["workers"] > 0 for q in queues.values()) and streams > 0
    return ready, {"redis": "ok", "queues": queues, "stream_workers": streams}


def _recent_ids(queue, per_registry: int) -> list[str]:
    ids = list(queue.get_job_ids(0, per_registry - 1))
    for registry in (queue.started_job_registry, queue.finished_job_registry, queue.failed_job_registry):
        # Scores grow with time (start or expiry), so the last ones are the most recent.
        ids += registry.get_job_ids(-per_registry, -1, cleanup=False)
    return ids


def _ended_since(redis, registry, ttl_s: int, window_s: int) -> int:
    """Jobs that ended within the window: RQ scores a finished or failed job by when it expires
    (its end + its result or failure TTL, the same for every job here), so one ZCOUNT answers."""
    return int(redis.zcount(registry.key, time.time() - window_s + ttl_s, "+inf"))


def processes(redis) -> list[dict]:
    """Every live worker process (batch kinds and stream), with CPU and memory when it runs on this
    host, and this API process."""
    from rq import Worker

    host = socket.gethostname()
    out = [{"name": f"api.{host}.{os.getpid()}", "kind": "api", "pid": os.getpid(), "host": host}]
    workers = Worker.all(connection=redis)
    alive = redis.mget([keys.worker_alive(w.name) for w in workers]) if workers else []
    for worker, flag in zip(workers, alive):
        if flag:
            kinds = ",".join(q.name for q in worker.queues)
            out.append({"name": worker.name, "kind": kinds, "pid": worker.pid, "host": worker.hostname})
    for name in stream_worker_loads(redis):
        parts = name.split(".")  # stream.<host>.<pid>.<id>
        pid = int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None
        out.append({"name": name, "kind": "stream", "pid": pid, "host": ".".join(parts[1:-2]) or None})
    for proc in out:
        found = procstat.usage(proc["pid"]) if proc["host"] in (host, None) and proc["pid"] else None
        proc.update(found or {"cpu_percent": None, "rss_mb": None})
    return out


def _queue_figures(redis, settings, queue, kind: Kind, window_s: int) -> dict:
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.count,
        "failed": queue.failed_job_registry.count,
        "failed_window": _ended_since(redis, queue.failed_job_registry, settings.failure_ttl_s, window_s),
        "finished_window": _ended_since(redis, queue.finished_job_registry, settings.result_ttl_s, window_s),
        "workers": len(alive_workers(redis, queue)),
        "waiting": queue_depth(redis, kind.value),
        "limit": queue_cap(settings, kind.value),
    }


def fleet_status(redis, settings, recent: int, caller=None, window_s: int = 3600) -> dict:
    """Queue, worker and process figures are the fleet's; the recent jobs are the caller's own (admin: all)."""
    queues, jobs = {}, []
    for kind in Kind:
        queue = get_queue(kind, redis)
        queues[kind.value] = _queue_figures(redis, settings, queue, kind, window_s)
        for job_id in dict.fromkeys(_recent_ids(queue, recent)):
            view = fetch_job(redis, job_id)
            if view is not None and (caller is None or caller.may_use(view.owner)):
                jobs.append(view)
    epoch = datetime.fromtimestamp(0, timezone.utc)
    jobs.sort(key=lambda v: v.created_at or epoch, reverse=True)
    store = RoomStore(redis, settings)
    rooms = [r for r in store.list() if store.is_open(r.id)]
    loads = stream_worker_loads(redis)
    return {
        "queues": queues,
        "stream_workers": loads,
        "rooms_open": len(rooms),
        "rooms_limit": open_rooms_cap(settings),
        "stream_capacity": settings.stream_capacity * len(loads),
        "free_disk_mb": free_disk_bytes(settings) // (1024 * 1024),
        "min_free_disk_mb": settings.min_free_disk_mb,
        "recent_jobs": [{**v.__dict__, "status": v.status.value} for v in jobs[:recent]],
        "window_s": window_s,
        "processes": processes(redis),
        "limits": {"text_chars": settings.max_text_chars, "message_chars": settings.max_message_chars,
                   "system_prompt_chars": SYSTEM_PROMPT_CHARS},
    }
