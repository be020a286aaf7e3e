"""What the fleet is doing: readiness (GET /readyz) and the operators' view (GET /v1/fleet)."""

from __future__ import annotations

from datetime import datetime, timezone

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


def fleet_status(redis, settings, recent: int, caller=None) -> dict:
    """Queue and worker figures are the fleet's; the recent jobs are the caller's own (admin: all)."""
    queues, jobs = {}, []
    for kind in Kind:
        queue = get_queue(kind, redis)
        queues[kind.value] = {
            "queued": queue.count,
            "started": queue.started_job_registry.count,
            "failed": queue.failed_job_registry.count,
            "workers": len(alive_workers(redis, queue)),
            "waiting": queue_depth(redis, kind.value),
            "limit": queue_cap(settings, kind.value),
        }
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
    }
