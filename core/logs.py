"""Logging set-up for every process of the fleet (one format, level from settings)."""

import logging


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "faster_whisper", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
