"""Logging set-up for every process of the fleet (one format, level from settings).

Lines carry the job id and the room id of the work they belong to, when there is one: workers set
:data:`job_id` / :data:`room_id` (context variables, so per thread and per task) and a filter on
the handlers adds ``[job=…]`` / ``[room=…]`` to every record, whichever logger wrote it."""

import logging
from contextvars import ContextVar

job_id: ContextVar[str | None] = ContextVar("mtl_job_id", default=None)
room_id: ContextVar[str | None] = ContextVar("mtl_room_id", default=None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        parts = []
        job, room = getattr(record, "job_id", None) or job_id.get(), getattr(record, "room_id", None) or room_id.get()
        if job:
            parts.append(f"job={job}")
        if room:
            parts.append(f"room={room}")
        record.ctx = f" [{' '.join(parts)}]" if parts else ""
        return True


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s%(ctx)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
    for noisy in ("httpx", "faster_whisper", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
