"""Deterministic renders (issue 15 item 4): a render without a room starts at the template's first
frame (or the caller's `cycle_start`), so two identical requests give identical frames.

In-process: the app on a real redis-server for the request checks, the lip-sync job function run
here for the renders (the same function a `lipsync` worker runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from avatars.demo import write_demo_portrait
from core.media import write_wav
from core.settings import get_settings


def syllables(seconds: float, rate: int = 16000) -> np.ndarray:
    """A voiced buzz switched on and off four times a second: speech-like enough to open the mouth."""
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 700, 1100), start=1))
    return (0.25 * buzz * (np.sin(2 * np.pi * 4 * t) > -0.2)).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(redis_server, tmp_path_factory):
    from workers.avatar import prepare_avatar

    data = tmp_path_factory.mktemp("data")
    mp = pytest.MonkeyPatch()
    mp.setenv("MTL_DATA_DIR", str(data))
    mp.setenv("MTL_REDIS_URL", redis_server.url(5))
    get_settings.cache_clear()
    settings = get_settings()
    portrait = write_demo_portrait(settings.kind_dir("uploads") / "portrait.png")
    prepare_avatar(f"uploads/{portrait.name}", "still", {})
    write_wav(settings.kind_dir("uploads") / "speech.wav", syllables(2.4), 16000)
    yield settings
    mp.undo()
    get_settings.cache_clear()


def decoded(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8)


def test_identical_requests_give_identical_frames(prepared):
    from workers.lipsync import render_lipsync_video

    first = render_lipsync_video("still", "det-a", audio="uploads/speech.wav", engine="warp")
    second = render_lipsync_video("still", "det-b", audio="uploads/speech.wav", engine="warp")
    assert first["cycle_start"] == second["cycle_start"] == 0
    out = prepared.data_dir / "lipsync"
    a, b = decoded(out / "det-a.mp4"), decoded(out / "det-b.mp4")
    assert a.size == b.size > 0 and np.array_equal(a, b)
    # A caller's start position is honoured and changes the picture (the portrait's idle sway).
    shifted = render_lipsync_video("still", "det-c", audio="uploads/speech.wav", engine="warp", cycle_start=50)
    assert shifted["cycle_start"] == 50 and shifted["cycle_end"] == (50 + shifted["frames"]) % 200
    assert not np.array_equal(a, decoded(out / "det-c.mp4"))


def test_cycle_start_is_validated_and_documented(prepared):
    from api.main import create_app

    with TestClient(create_app(prepared)) as client:
        body = {"avatar_id": "still", "audio": "uploads/speech.wav"}
        for bad in (200, 10**6):
            r = client.post("/v1/lipsync", json={**body, "cycle_start": bad})
            assert r.status_code == 422 and r.json()["error"]["code"] == "bad_cycle_start", r.text
            assert r.json()["error"]["cycle_length"] == 200
        r = client.post("/v1/lipsync", json={**body, "cycle_start": -1})
        assert r.status_code == 422, r.text
        r = client.post("/v1/lipsync", json={**body, "cycle_start": 199})
        assert r.status_code == 202, r.text
        schema = client.get("/openapi.json").json()["components"]["schemas"]["LipSyncRequest"]
        assert "first frame" in schema["properties"]["cycle_start"]["description"]


def test_a_speaking_photo_keeps_its_idle_motion(prepared):
    """A portrait avatar sways while it speaks, as it does in silence: the eyes move across the render."""
    import cv2

    from avatars.store import Avatar
    from workers.lipsync import render_lipsync_video

    render_lipsync_video("still", "idle-a", audio="uploads/speech.wav", engine="warp")
    avatar = Avatar.open(prepared.data_dir, "still")
    frames = decoded(prepared.data_dir / "lipsync" / "idle-a.mp4").reshape(-1, avatar.height, avatar.width, 3)
    lm = avatar.landmarks_at(0)
    (x1, y1), (x2, y2) = lm[[33, 263]].min(axis=0).astype(int) - 20, lm[[33, 263]].max(axis=0).astype(int) + 20
    eyes = [np.float32(cv2.cvtColor(f[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY)) for f in frames]
    shifts = [np.hypot(*cv2.phaseCorrelate(eyes[0], e)[0]) for e in eyes]
    assert max(shifts) > 1.0, shifts
