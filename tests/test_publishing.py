"""Publishing is the fleet's alone (issue 17): the session's media server asks the API before it
accepts a publisher (nginx-rtmp on_publish); only a stream worker, with the room's publish secret,
gets through. Anyone else on the host pushing a test pattern, to a new key or to a live room's
key, is refused, and the room keeps publishing at 25 fps. /stat answers only with the fleet's secret."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_until
from core.credentials import publish_secret
from core.mediaserver import PUBLISH_CHECK_PATH
from core.settings import Settings

pytestmark = pytest.mark.timeout(300)


def _publishing(media, key: str) -> bool:
    try:
        info = media.stat().get(key)
    except OSError:
        return False
    return bool(info and info.get("publishing"))


def _push(url: str, seconds: float = 4.0) -> subprocess.CompletedProcess:
    """An intruder's ffmpeg publishing a test pattern."""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
         f"testsrc=size=320x240:rate=25:d={seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
         "-pix_fmt", "yuv420p", "-f", "flv", url], capture_output=True, timeout=60)


def _pull_fps(url: str, out: Path, seconds: int = 6) -> float:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-t", str(seconds), "-i", url,
                    "-c", "copy", "-an", "-y", str(out)], capture_output=True, timeout=60, check=True)
    times = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time",
                            "-of", "csv=p=0", str(out)], capture_output=True, text=True, check=True).stdout.split()
    t = np.array([float(v) for v in times if v not in ("", "N/A")])
    return (len(t) - 1) / (t[-1] - t[0])


@pytest.fixture(scope="module")
def live_room(api, service):
    r = api.post("/v1/rooms", json={"username": "publish_guard"})
    assert r.status_code == 201, r.text
    room = r.json()
    wait_until(lambda: _publishing(service.media, room["stream_key"]), 60, what="the room to publish")
    yield room
    api.delete(f"/v1/rooms/{room['id']}")


def test_a_new_key_is_refused(service, live_room):
    media = service.media
    for key in (f"zbj-{uuid.uuid4().hex}", "intruder"):
        pushed = _push(media.rtmp_url(key))
        assert pushed.returncode != 0, f"publishing to {key} was accepted"
        assert not _publishing(media, key)
        assert not (media.hls_dir / f"{key}.m3u8").exists(), "the intruder's stream was written to HLS"


def test_a_live_rooms_key_is_refused_and_the_room_keeps_publishing(api, service, live_room, tmp_path):
    media, key = service.media, live_room["stream_key"]
    sessions = lambda: [e for e in api.get(f"/v1/rooms/{live_room['id']}/events").json()  # noqa: E731
                        if e["event"] == "session_start"]
    before = len(sessions())
    # The stream key is what viewers play: it is not what lets anyone publish, nor is a made-up secret.
    for url in (media.rtmp_url(key), media.rtmp_url(f"{key}?secret={key}"), media.rtmp_url(f"{key}?secret={'0' * 40}")):
        assert _push(url, 2.0).returncode != 0, f"{url} was accepted"
    assert _publishing(media, key)
    assert len(sessions()) == before, "the room's publisher was displaced"
    fps = _pull_fps(live_room["urls"]["rtmp"], tmp_path / "pulled.flv")
    assert 24.0 <= fps <= 26.0, fps


def _check(service, body: bytes) -> int:
    request = urllib.request.Request(f"{service.client.base_url}{PUBLISH_CHECK_PATH}", data=body, method="POST",
                                     headers={"content-type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_publish_check_wants_the_rooms_own_secret(service, live_room, api):
    """What the media server asks, asked directly: the right secret for an open room only."""
    settings = Settings(data_dir=service.data_dir)
    key = live_room["stream_key"]
    right = publish_secret(settings, key)
    assert _check(service, f"call=publish&name={key}&secret={right}".encode()) == 200
    wrong = right[:-1] + ("1" if right.endswith("0") else "0")  # one hex digit off (a right secret may end in 0)
    assert _check(service, f"call=publish&name={key}&secret={wrong}".encode()) == 403
    assert _check(service, f"call=publish&name={key}".encode()) == 403
    other = f"zbj-{uuid.uuid4().hex}"  # a well-formed key of no open room, with its own right secret
    assert _check(service, f"call=publish&name={other}&secret={publish_secret(settings, other)}".encode()) == 403


def test_stat_answers_only_the_fleet(service, live_room):
    media = service.media
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{media.http_base}/stat", timeout=5)
    assert refused.value.code == 403
    assert live_room["stream_key"] in media.stat()  # with the secret
