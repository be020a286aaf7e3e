"""Prometheus /metrics: the fleet's processes add up (multiprocess mode), and Redis gauges are read at
scrape time. Also: log lines carry job and room ids."""

from __future__ import annotations

import re
import tempfile

from conftest import poll_job, wait_until


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def test_metrics_after_jobs_and_a_room_speaking(api, service):
    job = poll_job(api, api.post("/v1/tts", json={"text": "Counting frames and jobs."}).json()["job_id"])
    assert job["status"] == "finished", job
    # a job that fails in its worker (arguments its function does not take)
    from redis import Redis

    from core.jobs import Kind, enqueue
    from core.settings import Settings

    settings = Settings(redis_url=service.env["MTL_REDIS_URL"], data_dir=service.data_dir)
    failed_id = enqueue(settings, Redis.from_url(service.env["MTL_REDIS_URL"]), Kind.asr, {"no_such_argument": 1},
                        admit=False)
    room = api.post("/v1/rooms", json={"username": "metrics", "ttl_s": 60}).json()
    try:
        assert api.post(f"/v1/rooms/{room['id']}/say", json={"audio": job["result"]["legacy_path"]}).status_code == 202

        def spoke():
            return any(e["event"] == "speech_start" for e in api.get(f"/v1/rooms/{room['id']}/events").json())

        wait_until(spoke, 60, what="the room speaking")

        def scraped():
            r = api.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            s = _samples(r.text)
            return s if _value(s, "mtl_room_frames_published_total", room=room["metrics_label"]) >= 25 else None

        s = wait_until(scraped, 30, what="frames counted for the room")
        # Rooms are labelled by an opaque value: nothing in the exposition leads to the stream key.
        text = api.get("/metrics").text
        assert room["id"] not in text and room["stream_key"] not in text and room["metrics_label"] in text
        assert _value(s, "mtl_rooms", state="open") >= 1
        assert _value(s, "mtl_rooms", state="speaking") + _value(s, "mtl_rooms", state="dark") \
            <= _value(s, "mtl_rooms", state="open")
        # jobs: durations per kind and stage, finished counts, queue depths from Redis
        assert _value(s, "mtl_job_duration_seconds_count", kind="tts", stage="run") >= 1
        assert _value(s, "mtl_job_duration_seconds_count", kind="tts", stage="queued") >= 1
        assert _value(s, "mtl_jobs_finished_total", kind="tts") >= 1
        for queue in ("tts", "asr", "avatar", "lipsync", "feedback"):
            assert f'mtl_queue_depth{{queue="{queue}",state="queued"}}' in s
        # API latency per route template, not per raw path
        assert _value(s, "mtl_api_request_duration_seconds_count", route="/v1/rooms/{room_ref}/events",
                      method="GET", status="200") >= 1
        assert not any(room["id"] in k for k in s if k.startswith("mtl_api_request"))
        assert poll_job(api, failed_id)["status"] == "failed"
        s = _samples(api.get("/metrics").text)
        assert _value(s, "mtl_jobs_failed_total", kind="asr") >= 1
        assert _value(s, "mtl_job_duration_seconds_count", kind="asr", stage="run") >= 1
    finally:
        api.delete(f"/v1/rooms/{room['id']}")
    # A closed room's series leave the exposition: it grows with open rooms, not with history.
    assert room["metrics_label"] not in api.get("/metrics").text
    # logs carry the room id (stream worker) and the job id (batch workers)
    logs = {p.name: p.read_text(errors="replace") for p in service.fleet.log_dir.glob("*.log")}
    assert any(f"room={room['id']}" in text for name, text in logs.items() if "stream" in name)


def test_job_ids_in_log_lines():
    import logging

    from core import logs

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    token = logs.job_id.set("job-123")
    try:
        assert logs.ContextFilter().filter(record) and record.ctx == " [job=job-123]"
    finally:
        logs.job_id.reset(token)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    logs.ContextFilter().filter(record)
    assert record.ctx == ""


def _reconnects(label: dict) -> float:
    """The counter's value for `label`, read from the metric itself: under pytest-xdist an earlier
    fixture in this process may have put prometheus_client in multiprocess mode and then removed its
    directory or variable, so neither registry is a reliable view here."""
    import os

    from prometheus_client import values

    from core import metrics

    if values.ValueClass is not values.MutexValue:  # multiprocess mode: its files need a directory
        os.environ.setdefault(metrics.ENV, tempfile.mkdtemp(prefix="mtl-metrics-"))
        os.makedirs(os.environ[metrics.ENV], exist_ok=True)
    return metrics._m()["reconnects"].labels(label["room"])._value.get()


def test_publisher_reconnects_are_counted(monkeypatch):
    """A publish session that ends with an error is retried; each retry counts as a reconnect."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from core import logs, metrics
    from workers import stream

    room_id = "f" * 32
    pub = object.__new__(stream.RoomPublisher)
    events = []
    pub.room = SimpleNamespace(id=room_id, avatar_id="demo")
    pub.settings = SimpleNamespace(data_dir=None)
    pub.loops = SimpleNamespace(ensure=lambda avatar: None)
    pub.store = SimpleNamespace(event=lambda *a, **k: events.append(a), wake_messages=lambda *a, **k: iter(()))
    pub.stop_event, pub.closed_by_expiry = threading.Event(), False
    pub.prep = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(stream.Avatar, "open", staticmethod(lambda *a: object()))
    sessions = []

    def session(avatar):
        sessions.append(logs.room_id.get())
        if len(sessions) == 3:
            pub.stop_event.set()
        raise ConnectionError("media server went away")

    pub._session = session
    monkeypatch.setattr(pub.stop_event, "wait", lambda timeout=None: pub.stop_event.is_set())
    label = {"room": metrics.room_label(room_id)}
    before = _reconnects(label)
    pub.run()
    assert sessions == [room_id] * 3  # the publisher thread's log lines carry the room id
    assert _reconnects(label) - before == 2
    assert len([e for e in events if e[1] == "session_error"]) == 3
