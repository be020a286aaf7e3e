"""`python -m workers KIND`: run one worker process for a queue (tts, asr, ...)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import sys
import uuid

from core.jobs import Kind, get_queue, redis_connection
from core.logs import setup_logging
from core.settings import get_settings
from workers.base import ServiceWorker, wait_for_redis

log = logging.getLogger("workers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("kind", choices=[k.value for k in Kind] + ["stream"])
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args(argv)
    if args.kind == "stream":
        # Live publishing is not a queue of finite jobs: rooms are taken through leases.
        from workers.stream import main as stream_main

        return stream_main()
    settings = get_settings()
    setup_logging(settings.log_level)
    from core import metrics

    metrics.init(settings)
    kind = Kind(args.kind)
    os.nice(settings.live_worker_nice if kind.value in settings.live_worker_kinds else settings.worker_nice)
    worker_ttl = 60
    connection = redis_connection(settings, socket_timeout=worker_ttl + 30)
    wait_for_redis(connection)
    # Load models before taking jobs: the first job should not pay for it, and a broken model
    # install should stop the worker at start rather than fail jobs.
    module = importlib.import_module(f"workers.{kind.value}")
    warm = getattr(module, "warm_up", None)
    if warm is not None:
        warm(settings)
    name = f"{kind.value}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    worker = ServiceWorker([get_queue(kind, connection)], connection=connection, name=name, settings=settings,
                           worker_ttl=worker_ttl)
    log.info("worker %s ready on queue %s", name, kind.value)
    worker.work(burst=args.burst, with_scheduler=False, logging_level=settings.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
