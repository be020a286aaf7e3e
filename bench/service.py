"""Helpers for benchmarks that drive a running fleet over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from core.settings import PROJECT_ROOT

SHARED_MEDIA = PROJECT_ROOT.parent / "shared" / "media"


def poll(client: httpx.Client, job_id: str, interval: float = 0.02, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("finished", "failed"):
            return job
        time.sleep(interval)
    raise TimeoutError(job_id)


def ensure_avatar(client: httpx.Client, avatar_id: str, source: Path) -> dict:
    current = client.get(f"/v1/avatars/{avatar_id}")
    if current.status_code == 200 and current.json()["status"] == "ready":
        return current.json()
    with source.open("rb") as fh:
        r = client.post("/v1/avatars", files={"file": (source.name, fh)}, data={"avatar_id": avatar_id})
    r.raise_for_status()
    job = poll(client, r.json()["job_id"], interval=0.2)
    if job["status"] != "finished":
        raise RuntimeError(f"avatar preparation failed: {job['error']}")
    return client.get(f"/v1/avatars/{avatar_id}").json()


def upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        r = client.post("/v1/files", files={"file": (path.name, fh)})
    r.raise_for_status()
    return r.json()["file"]
