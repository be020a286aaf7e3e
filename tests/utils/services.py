"""What the fast service tests share: settings over a real redis-server database and a temporary
data directory, callers for two tenants and an admin, and files as the workers and uploads leave
them (a prepared avatar, a claimed upload, a short video). No app, no HTTP, no workers."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import numpy as np

KEY_A, KEY_B, ADMIN_KEY = "svc-tenant-a-0123456789", "svc-tenant-b-0123456789", "svc-admin-0123456789"


def callers() -> dict:
    """{"A", "B", "admin"}: api.access.Caller of each key, as require_api_key resolves them."""
    from api.access import Caller, key_owner

    return {"A": Caller(owner=key_owner(KEY_A), admin=False), "B": Caller(owner=key_owner(KEY_B), admin=False),
            "admin": Caller(owner=key_owner(ADMIN_KEY), admin=True)}


def service_settings(redis_url: str, data_dir: Path, **overrides):
    from core.settings import Settings

    values = dict(redis_url=redis_url, data_dir=data_dir, api_keys=[KEY_A, KEY_B], admin_keys=[ADMIN_KEY],
                  max_open_rooms=100, min_free_disk_mb=0, rate_limit_enabled=False)
    return Settings(_env_file=None, **{**values, **overrides})


def run(coro):
    """An async service call from a plain test (run_in_threadpool needs a running loop)."""
    return asyncio.run(coro)


def prepared_avatar(settings, avatar_id: str, **manifest) -> Path:
    """A prepared avatar's files as the avatar worker leaves them (manifest, first frame, landmarks)."""
    from PIL import Image

    path = settings.data_dir / "avatars" / avatar_id
    (path / "frames").mkdir(parents=True, exist_ok=True)
    (path / "avatar.json").write_text(json.dumps({"id": avatar_id, "width": 64, "height": 64, "fps": 25,
                                                  "created_at": 1.0, "source_sha256": avatar_id, **manifest}))
    Image.new("RGB", (64, 64), (200, 150, 120)).save(path / "frames" / "000000.jpg")
    np.save(path / "landmarks.npy", np.full((1, 478, 3), 32.0, dtype=np.float32))
    return path


def owned_file(settings, redis, caller, name: str, data: bytes) -> str:
    """A file under uploads/ recorded as `caller`'s, as an accepted upload is; its reference."""
    from api.services.files import claim_file

    path = settings.kind_dir("uploads") / name
    path.write_bytes(data)
    return claim_file(settings, redis, caller, path)


def video_bytes(tmp: Path, seconds: float = 1.0) -> bytes:
    out = tmp / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
                    "-t", str(seconds), "-pix_fmt", "yuv420p", str(out)], check=True)
    return out.read_bytes()
