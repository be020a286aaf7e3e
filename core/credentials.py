"""The fleet's own secrets: made at first start, kept under ``<data_dir>/secrets`` (directory 0700,
files 0600, so only the user the fleet runs as reads them), or given in settings for a fleet
spread over hosts that share no data directory.

* ``redis``: the own Redis' ``requirepass`` (core/fleet.py), unless MTL_REDIS_PASSWORD or a
  password in MTL_REDIS_URL is given. Redis reads it from ``redis.conf`` beside it (0600), not
  from its command line, which every local user can read in ``ps``.
* ``publish``: the key of the per-room publish secrets. A stream worker publishes
  ``<stream key>?secret=HMAC(key, stream key)``; the media server's ``on_publish`` asks the API
  (api/routers/publish.py), which recomputes it. The stream key is what viewers play, so it cannot
  be what lets someone publish.
* ``media-stat``: sent as ``X-Media-Secret`` to the media server's ``/stat``, which lists every
  stream key and answers nobody else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlparse

from core.settings import Settings

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")  # what token_urlsafe makes; safe inside nginx.conf quotes
STREAM_KEY = re.compile(r"^zbj-[0-9a-f]{32}$")  # core/rooms.py new_stream_key: random, not the room id


def secrets_dir(settings: Settings) -> Path:
    path = settings.data_dir / "secrets"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


_known: dict[Path, str] = {}  # a secret never changes while the fleet runs: read once per process


def fleet_secret(settings: Settings, name: str) -> str:
    """The secret `name`, made on first use (O_EXCL: processes starting together agree on one)."""
    path = settings.data_dir / "secrets" / name
    if path in _known:
        return _known[path]
    path = secrets_dir(settings) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = _read(path)
    else:
        value = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        log.info("made the fleet secret %s (%s, mode 0600)", name, path)
    _known[path] = value
    return value


def _read(path: Path) -> str:
    for _ in range(50):  # another process made it a moment ago and may still be writing it
        value = path.read_text().strip()
        if value:
            if not _TOKEN.match(value):
                raise ValueError(f"{path}: not a secret this fleet made")
            return value
        time.sleep(0.02)
    raise ValueError(f"{path} is empty")


def own_redis_password(settings: Settings) -> str | None:
    """The password `make run` gives its own Redis: None when one is configured (MTL_REDIS_PASSWORD
    or inside MTL_REDIS_URL, which work as before) or the Redis is not a local one; else the
    fleet's secret, made at the fleet's first start."""
    url = urlparse(settings.redis_url)
    if settings.redis_password or url.password or url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    return fleet_secret(settings, "redis")


def redis_password(settings: Settings) -> str | None:
    """What clients send: the configured password, else the fleet's secret when the fleet made one
    (so every process and tool with the same data directory finds it), else none."""
    if settings.redis_password:
        return settings.redis_password
    path = settings.data_dir / "secrets" / "redis"
    if path in _known or (not urlparse(settings.redis_url).password and path.is_file()):
        return fleet_secret(settings, "redis")
    return None


def stat_secret(settings: Settings) -> str:
    if settings.media_stat_secret:
        return settings.media_stat_secret
    return fleet_secret(settings, "media-stat")


def publish_secret(settings: Settings, stream_key: str) -> str:
    key = settings.publish_key or fleet_secret(settings, "publish")
    return hmac.new(key.encode(), b"publish:" + stream_key.encode(), hashlib.sha256).hexdigest()[:40]


def publish_url(settings: Settings, stream_key: str) -> str:
    """Where a stream worker publishes a room: the settings' template plus the room's secret."""
    url = settings.publish_url_template.format(stream_key=stream_key, rtmp_port=settings.rtmp_port,
                                               media_http_port=settings.media_http_port,
                                               media_host=settings.media_public_host)
    return f"{url}{'&' if '?' in url else '?'}secret={publish_secret(settings, stream_key)}"


def may_publish(settings: Settings, stream_key: str, secret: str | None) -> bool:
    """The secret `stream_key` was published with is the room's (the room's being open is the
    caller's check: this module knows no Redis)."""
    if not secret or not STREAM_KEY.match(stream_key or ""):
        return False
    return hmac.compare_digest(secret.encode(), publish_secret(settings, stream_key).encode())
