"""No job is lost: a worker killed mid-job, and Redis restarted with jobs queued."""

from __future__ import annotations

import os
import signal
import time

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from conftest import Fleet, RedisServer, fleet_env, free_port, wait_until
from core.jobs import Kind, enqueue, fetch_job, get_queue
from core.media import read_wav
from core.settings import Settings

# ~50 s of speech, about 7 s of Piper's CPU: a kill 1 s after the start lands inside synthesis even alone
# on the machine (19 sentences made the two syntheses of the kill test cost twice as much for nothing).
LONG_EN = " ".join(
    f"This is sentence number {i} of a long announcement for the live room, read slowly and clearly."
    for i in range(1, 11)
)


def _settings(env: dict[str, str]) -> Settings:
    return Settings(redis_url=env["MTL_REDIS_URL"], data_dir=env["MTL_DATA_DIR"])


# These TTS workers start on an empty data directory: the replies' opening phrases they would cache at
# start (22 syntheses, 2.4 s of CPU each time, under the render lock the tests' jobs wait for) serve no
# room here. Their jobs are English, so they load Piper only: the Mandarin voice they would also load
# imports TensorFlow, 3.3 s of CPU at each of the five worker starts here.
LEAN_TTS = {"MTL_TTS_WARM_PHRASES": "false", "MTL_TTS_ENGINE": "piper"}


def _isolated(redis_server, tmp_path, db: int, **extra: str):
    """Its own Redis database and worker processes, so killing workers cannot disturb other tests."""
    env = fleet_env(redis_server.url(db), tmp_path / "data", **LEAN_TTS, **extra)
    conn = Redis.from_url(env["MTL_REDIS_URL"])
    conn.flushdb()
    return _settings(env), conn, Fleet(env=env, log_dir=tmp_path)


def _status(conn: Redis, job_id: str) -> str | None:
    raw = conn.hget(f"rq:job:{job_id}", "status")
    return raw.decode() if raw else None


def test_sigkilled_worker_job_completes_on_another_worker(redis_server, tmp_path):
    settings, conn, fleet = _isolated(redis_server, tmp_path, 3)
    try:
        victim = fleet.worker("tts")
        first = enqueue(settings, conn, Kind.tts, {"text": LONG_EN, "output_name": "long"}, job_id="long")
        others = [enqueue(settings, conn, Kind.tts, {"text": f"Queued sentence {i}.", "output_name": f"q{i}"},
                          job_id=f"q{i}") for i in range(3)]
        wait_until(lambda: _status(conn, first) == "started", 120, what="the long job to start")
        time.sleep(1.0)  # well inside synthesis
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert _status(conn, first) == "started"  # the dead worker left it behind
        fleet.worker("tts")
        wait_until(lambda: all(_status(conn, j) == "finished" for j in [first, *others]), 180,
                   what="all jobs to finish after the kill")
        view = fetch_job(conn, first)
        job = Job.fetch(first, connection=conn, serializer=JSONSerializer)
        assert job.meta["recoveries"] == 1  # requeued exactly once
        audio, rate = read_wav(settings.data_dir / "tts" / "long.wav")
        assert abs(audio.size / rate - view.result["duration_s"]) < 0.01 and view.result["duration_s"] > 30
        for j in others:
            assert (settings.data_dir / "tts" / f"{j}.wav").is_file()
        # No stray copy: one output per job, plus the content-addressed cache.
        outputs = sorted(p.name for p in (settings.data_dir / "tts").glob("*.wav"))
        assert outputs == sorted(["long.wav", "q0.wav", "q1.wav", "q2.wav"])
    finally:
        fleet.stop()


def test_queued_jobs_survive_redis_restart(tmp_path):
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.data_dir.mkdir()
    server.start()
    env = fleet_env(server.url(0), tmp_path / "data", **LEAN_TTS)
    settings = _settings(env)
    conn = Redis.from_url(env["MTL_REDIS_URL"])
    fleet = Fleet(env=env, log_dir=tmp_path)
    try:
        ids = [enqueue(settings, conn, Kind.tts, {"text": f"Persisted job {i}.", "output_name": f"p{i}"})
               for i in range(3)]
        time.sleep(1.2)  # appendfsync everysec
        server.stop()
        server.start()
        conn = Redis.from_url(env["MTL_REDIS_URL"])
        assert [_status(conn, i) for i in ids] == ["queued"] * 3
        fleet.worker("tts")
        wait_until(lambda: all(_status(conn, i) == "finished" for i in ids), 120, what="jobs after restart")
        for i in range(3):
            assert (settings.data_dir / "tts" / f"p{i}.wav").is_file()
    finally:
        fleet.stop()
        server.stop()



def test_job_that_keeps_killing_workers_fails_with_clear_error(redis_server, tmp_path):
    settings, conn, fleet = _isolated(redis_server, tmp_path, 4, MTL_JOB_MAX_RECOVERIES="0")
    try:
        victim = fleet.worker("tts")
        job_id = enqueue(settings, conn, Kind.tts, {"text": LONG_EN, "output_name": "doomed"})
        wait_until(lambda: _status(conn, job_id) == "started", 120, what="the job to start")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        fleet.worker("tts")
        wait_until(lambda: _status(conn, job_id) == "failed", 60, what="the abandoned job to fail")
        view = fetch_job(conn, job_id)
        assert view.error == {"type": "AbandonedJobError", "message": "the worker running this job died"}
    finally:
        fleet.stop()


def test_a_stopping_worker_is_not_held_by_its_command_channel(redis_server, tmp_path):
    """A stopping worker (SIGTERM from supervisorctl or a deploy, the end of a burst) unsubscribes from
    RQ's command channel, then waits for the thread listening on it. When that thread reads the
    unsubscribe reply first (a race: about half of the stops), it waits for a new subscription; the
    worker must still stop within the stop timeout supervisord gives workers (core/fleet.py), after
    which it would be SIGKILLed. The losing order of the race is set up here on purpose."""
    import threading

    from workers.base import ServiceWorker

    settings, conn, _ = _isolated(redis_server, tmp_path, 5)
    worker = ServiceWorker([get_queue(Kind.avatar, conn)], connection=conn, settings=settings)
    worker.subscribe()
    worker.pubsub.unsubscribe()
    wait_until(lambda: not worker.pubsub.subscribed, 10, interval=0.05, what="the thread to read the reply")
    time.sleep(0.2)  # the thread is back waiting for a message
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopping.start()
    stopping.join(timeout=settings.worker_stop_grace_s + 10)
    assert not stopping.is_alive() and not worker.pubsub_thread.is_alive()
