"""The worker process shared by every kind: RQ's SimpleWorker plus liveness and crash recovery.

* Jobs run in this process (SimpleWorker): models load once and are never forked after loading.
* A heartbeat thread keeps ``mtl:alive:<worker>`` alive for ``worker_dead_after_s``; readiness
  and recovery both use it, so a busy worker is never mistaken for a dead one.
* Recovery: a job in a queue's StartedJobRegistry whose worker has no liveness key was abandoned
  (SIGKILL, OOM, power loss). Its registry entry is expired and RQ's own cleanup requeues it,
  so recovery happens within seconds, not after the job timeout.
* Failures are recorded in one place: the exception handler stores a short error in job meta.
* Graceful stop (SIGTERM, as the supervisor sends it): the current job finishes within
  ``worker_stop_grace_s`` or goes back to the front of its queue, then the process exits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.worker import WorkerStatus
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from core import logs, metrics
from core.jobs import listen_for_commands
from core.registry import note_worker_alive, note_worker_gone, worker_alive
from core.settings import Settings

log = logging.getLogger(__name__)

def record_failure(job: Job, exc_type, exc_value, tb) -> bool:
    """RQ exception handler: keep a client-facing error next to RQ's traceback."""
    message = str(exc_value) or exc_type.__name__
    if exc_type.__name__ == "AbandonedJobError":
        message = "the worker running this job died"
    error = {"type": exc_type.__name__, "message": message[:2000]}
    # Domain errors (e.g. AvatarError) carry a machine-readable code and details for the client.
    for attr in ("code", "details"):
        value = getattr(exc_value, attr, None)
        if value:
            error[attr] = value
    job.meta["error"] = error
    metrics.count("jobs_failed", job.origin or "unknown")
    try:
        job.save_meta()
    except Exception:  # the job hash may already be gone; RQ still records the failure
        log.warning("could not save error meta for job %s", job.id)
    if tb is not None:
        log.error("job %s failed: %s", job.id, "".join(traceback.format_exception(exc_type, exc_value, tb))[-2000:])
    return True  # let RQ's default handling (failed registry, retries) continue


def recover_abandoned(connection: Redis, queue: Queue, max_recoveries: int = 2) -> list[str]:
    """Requeue jobs whose worker is gone; safe to run from many workers at once.

    Whoever removes the registry entry (ZREM returns 1) owns the job's recovery, so a job is
    requeued exactly once even when several workers (or RQ's own maintenance) look at it.
    """
    registry = StartedJobRegistry(queue=queue)
    recovered: list[str] = []
    for raw in connection.zrange(registry.key, 0, -1):
        entry = raw.decode()
        job_id = entry.split(":", 1)[0]
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            continue
        if job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        if job.worker_name and worker_alive(connection, job.worker_name):
            continue
        if connection.zrem(registry.key, entry) != 1:
            continue
        recoveries = int(job.meta.get("recoveries", 0))
        if recoveries < max_recoveries:
            # Only abandonment is retried: an exception inside a job is deterministic and fails once.
            job.meta["recoveries"] = recoveries + 1
            job.save_meta()
            job.retries_left = 1
            with connection.pipeline() as pipe:
                job.retry(queue, pipe)
                pipe.execute()
            metrics.count("jobs_recovered", queue.name)
            log.warning("queue %s: requeued job %s abandoned by dead worker %s", queue.name, job_id,
                        job.worker_name)
        else:
            # A job that kills every worker it runs on must not loop forever.
            record_failure(job, AbandonedJobError, AbandonedJobError(), None)
            with connection.pipeline() as pipe:
                FailedJobRegistry(queue=queue).add(job, exc_string="abandoned by dead workers", pipeline=pipe)
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                pipe.execute()
            log.error("queue %s: job %s failed after %d recoveries", queue.name, job_id, recoveries)
        recovered.append(job_id)
    return recovered


def requeue_interrupted(connection: Redis, queue: Queue, job_id: str) -> bool:
    """Put a job this worker started back at the front of its queue (the worker is stopping).

    The registry entry is claimed as in :func:`recover_abandoned`, so a job that finished or was
    recovered meanwhile is left alone. Not counted as a recovery: the job did nothing wrong."""
    registry = StartedJobRegistry(queue=queue)
    entries = [e for e in connection.zrange(registry.key, 0, -1) if e.decode().split(":", 1)[0] == job_id]
    if not any(connection.zrem(registry.key, e) == 1 for e in entries):
        return False
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return False
    job.meta["progress"] = 0.0
    job.save_meta()
    queue.enqueue_job(job, at_front=True)
    return True


class ServiceWorker(SimpleWorker):
    def __init__(self, *args, settings: Settings, **kwargs):
        super().__init__(*args, serializer=JSONSerializer, exception_handlers=[record_failure],
                         disable_default_exception_handler=False, **kwargs)
        self._settings = settings
        self._stop_beat = threading.Event()
        self._beat: threading.Thread | None = None
        self._grace: threading.Timer | None = None

    def subscribe(self):
        # RQ's own waits 60 s to stop (core/jobs.py).
        self.pubsub, self.pubsub_thread = listen_for_commands(self)

    def perform_job(self, job: Job, queue: Queue, *args, **kwargs) -> bool:
        """RQ's perform_job, measured (time queued, time run, finished) and with the job id in the logs."""
        token = logs.job_id.set(job.id)
        started = time.monotonic()
        if job.enqueued_at is not None:
            from datetime import datetime, timezone

            enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=timezone.utc)
            metrics.observe_job(queue.name, "queued", (datetime.now(timezone.utc) - enqueued).total_seconds())
        try:
            return super().perform_job(job, queue, *args, **kwargs)
        finally:
            metrics.observe_job(queue.name, "run", time.monotonic() - started)
            try:
                if job.get_status(refresh=False) == JobStatus.FINISHED:
                    metrics.count("jobs_done", queue.name)
            except Exception:
                pass
            logs.job_id.reset(token)

    def _heartbeat_loop(self) -> None:
        conn = Redis(connection_pool=self.connection.connection_pool)
        ttl_ms = int(self._settings.worker_dead_after_s * 1000)
        while not self._stop_beat.is_set():
            try:
                note_worker_alive(conn, self.name, ttl_ms)
                for queue in self.queues:
                    recover_abandoned(conn, queue, self._settings.job_max_recoveries)
            except Exception:
                log.exception("heartbeat/recovery round failed; retrying")
            self._stop_beat.wait(self._settings.worker_heartbeat_s)
        note_worker_gone(conn, self.name)

    def register_birth(self, *args, **kwargs):
        super().register_birth(*args, **kwargs)
        self._beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beat.start()

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        # RQ lets a SimpleWorker finish its job however long it takes, and the job cannot be
        # interrupted safely in-process; the supervisor would SIGKILL it after its stop timeout
        # and the job would wait for dead-worker recovery. Finish within the grace, else requeue.
        if self.get_state() == WorkerStatus.BUSY and self._grace is None:
            self._grace = threading.Timer(self._settings.worker_stop_grace_s, self._requeue_and_exit)
            self._grace.daemon = True
            self._grace.start()

    def _requeue_and_exit(self) -> None:
        job_id = self.get_current_job_id()
        if job_id is not None:
            queue = next((q for q in self.queues if q.name == self.get_current_job().origin), self.queues[0])
            if requeue_interrupted(self.connection, queue, job_id):
                log.warning("queue %s: stop grace over; job %s put back at the front of the queue", queue.name, job_id)
        try:
            self.register_death()
        finally:
            logging.shutdown()
            os._exit(0)  # the job is still running in the main thread; it must not finish now

    def register_death(self, *args, **kwargs):
        if self._grace is not None:
            self._grace.cancel()
        self._stop_beat.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        super().register_death(*args, **kwargs)


def wait_for_redis(connection: Redis, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.ping()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis not reachable after {timeout_s:.0f} s: {exc}") from exc
            time.sleep(0.5)
