"""Prometheus metrics of every process, in prometheus_client's multiprocess mode.

Each process (API, batch workers, stream workers) writes its counters and histograms to files in
``PROMETHEUS_MULTIPROC_DIR`` (``<data_dir>/metrics``; core/fleet.py sets it for the whole fleet and
wipes it at start); the API's ``GET /metrics`` adds them up across processes. Queue depths and room
counts are read from Redis at scrape time (:class:`RedisCollector`), so they are never stale.

:func:`init` must run before the first metric is touched: prometheus_client chooses its
multiprocess storage when it is imported, from the environment variable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core.settings import Settings

ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(settings: Settings) -> Path:
    return settings.data_dir / "metrics"


def init(settings: Settings) -> Path:
    """Point this process at the shared metrics directory (unless the fleet already did)."""
    path = Path(os.environ.setdefault(ENV, str(metrics_dir(settings))))
    path.mkdir(parents=True, exist_ok=True)
    return path


def room_label(room_id: str) -> str:
    """A room's label in per-room series: a one-way hash of its id, so /metrics never shows the id
    (which the API names the room by; its stream key is a separate random value); a room's API view
    carries it as `metrics_label`."""
    return hashlib.sha256(b"musetalk-live metrics room:" + room_id.encode()).hexdigest()[:16]


def _m():
    """The metric objects, created on first use (after :func:`init`)."""
    global _METRICS
    if _METRICS is None:
        from prometheus_client import Counter, Histogram

        job_buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
        _METRICS = {
            "job_seconds": Histogram("mtl_job_duration_seconds", "Job time per kind and stage (queued: waiting "
                                     "for a worker; run: executing)", ["kind", "stage"], buckets=job_buckets),
            "jobs_done": Counter("mtl_jobs_finished", "Jobs finished per kind", ["kind"]),
            "jobs_failed": Counter("mtl_jobs_failed", "Jobs failed per kind", ["kind"]),
            "jobs_recovered": Counter("mtl_jobs_recovered", "Jobs requeued after their worker died", ["kind"]),
            "frames": Counter("mtl_room_frames_published", "Video frames published per room", ["room"]),
            "late": Counter("mtl_room_frames_late", "Frames published behind real time per room", ["room"]),
            "reconnects": Counter("mtl_room_publisher_reconnects", "RTMP publish sessions restarted per room",
                                  ["room"]),
            "api_seconds": Histogram("mtl_api_request_duration_seconds", "API latency per route template",
                                     ["method", "route", "status"],
                                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
        }
    return _METRICS


_METRICS: dict | None = None


def observe_job(kind: str, stage: str, seconds: float) -> None:
    _safe(lambda: _m()["job_seconds"].labels(kind, stage).observe(max(0.0, seconds)))


def count(name: str, *labels: str, amount: float = 1) -> None:
    _safe(lambda: _m()[name].labels(*labels).inc(amount))


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    _safe(lambda: _m()["api_seconds"].labels(method, route, str(status)).observe(seconds))


def _safe(action) -> None:
    """Metrics never break the work they measure."""
    try:
        action()
    except Exception:  # pragma: no cover - e.g. the metrics directory was removed under us
        import logging

        logging.getLogger(__name__).debug("metric update failed", exc_info=True)


class RedisCollector:
    """Gauges read from Redis at scrape time: queue depths and rooms open/speaking/dark."""

    def __init__(self, redis) -> None:
        self.redis = redis

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        from rq.job import JobStatus
        from rq.registry import FailedJobRegistry, StartedJobRegistry

        from core.jobs import Kind, get_queue
        from core.rooms import (SESSION_OFF, SESSION_ON, SPEECH_OFF, SPEECH_ON, RoomState, RoomStore, latest_is,
                                lease_key)

        depth = GaugeMetricFamily("mtl_queue_depth", "Jobs per queue and state", labels=["queue", "state"])
        for kind in Kind:
            queue = get_queue(kind, self.redis)
            depth.add_metric([kind.value, JobStatus.QUEUED.value], queue.count)
            depth.add_metric([kind.value, JobStatus.STARTED.value], StartedJobRegistry(queue=queue).count)
            depth.add_metric([kind.value, JobStatus.FAILED.value], FailedJobRegistry(queue=queue).count)
        yield depth

        store = RoomStore(self.redis, None)  # only Redis reads below; no settings needed
        speaking, dark = RoomState.SPEAKING.value, RoomState.DARK.value
        counts = {"open": 0, speaking: 0, dark: 0}
        for room in store.list():
            if not store.is_open(room.id):
                continue
            counts["open"] += 1
            recent = store.events(room.id)[-40:]
            on_air = bool(self.redis.exists(lease_key(room.id))) and latest_is(recent, SESSION_ON, SESSION_OFF)
            if not on_air:
                counts[dark] += 1
            elif latest_is(recent, SPEECH_ON, SPEECH_OFF):
                counts[speaking] += 1
        rooms = GaugeMetricFamily("mtl_rooms", "Live rooms: open, speaking (on air) and dark (open, not on air)",
                                  labels=["state"])
        for state, value in counts.items():
            rooms.add_metric([state], value)
        yield rooms


class OpenRoomsOnly:
    """The processes' metrics with per-room series kept for open rooms only. A closed room's counters
    stay in its publisher's multiprocess file until that process restarts (prometheus_client cannot
    delete from those files), but they are not exposed: the exposition grows with the rooms that are
    open, not with every room there ever was."""

    def __init__(self, inner, redis) -> None:
        self.inner, self.redis = inner, redis

    def collect(self):
        from core.rooms import RoomStore

        store = RoomStore(self.redis, None)
        open_ids = {room_label(room.id) for room in store.list() if store.is_open(room.id)}
        for family in self.inner.collect():
            if family.name.startswith("mtl_room_"):
                family.samples = [s for s in family.samples if s.labels.get("room") in open_ids]
            yield family


def render(redis) -> tuple[bytes, str]:
    """The exposition of every process's metrics plus the Redis gauges (for GET /metrics)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    if os.environ.get(ENV):
        registry.register(OpenRoomsOnly(multiprocess.MultiProcessCollector(None), redis))
    registry.register(RedisCollector(redis))
    return generate_latest(registry), CONTENT_TYPE_LATEST
