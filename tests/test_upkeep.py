"""Enrollment upkeep (issue 15 item 5): the sample an avatar learned its mouth from is kept with it;
when the bank format changes the avatar re-enrolls itself through an `avatar` queue job, serving
meanwhile, and `GET /v1/avatars/{id}` says whether its enrollment is current.

In-process: the app and an RQ worker on a real redis-server; the talking sample is the demo
portrait made to speak by the warp engine (no ../shared needed)."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from avatars.demo import write_demo_portrait
from core.media import write_wav
from core.settings import get_settings
from test_render_start import syllables


@pytest.fixture(scope="module")
def enrolled(redis_server, tmp_path_factory):
    from workers.avatar import prepare_avatar
    from workers.lipsync import render_lipsync_video

    mp = pytest.MonkeyPatch()
    mp.setenv("MTL_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    mp.setenv("MTL_REDIS_URL", redis_server.url(6))
    mp.setenv("MTL_MIN_SAMPLE_S", "2")
    get_settings.cache_clear()
    settings = get_settings()
    Redis.from_url(settings.redis_url).flushdb()
    up = settings.kind_dir("uploads")
    write_demo_portrait(up / "portrait.png")
    write_wav(up / "speech.wav", syllables(6.0), 16000)
    prepare_avatar("uploads/portrait.png", "talker", {})
    talk = render_lipsync_video("talker", "talk", audio="uploads/speech.wav", engine="warp")
    shutil.copy(settings.data_dir / talk["file"], up / "talk.mp4")
    result = prepare_avatar("uploads/portrait.png", "kept", {}, speech_sample="uploads/talk.mp4")
    assert result["enrollment"] is not None
    yield settings
    mp.undo()
    get_settings.cache_clear()


def test_outdated_enrollment_is_renewed_in_the_background_while_serving(enrolled):
    from lipsync.mouthbank import BANK_VERSION, bank_dir
    from lipsync.upkeep import enqueue_stale, kept_sample
    from core.jobs import Kind, get_queue

    settings = enrolled
    path = settings.data_dir / "avatars" / "kept"
    assert kept_sample(path).read_bytes() == (settings.kind_dir("uploads") / "talk.mp4").read_bytes()
    redis = Redis.from_url(settings.redis_url)
    from api.main import create_app

    with TestClient(create_app(settings)) as client:
        body = client.get("/v1/avatars/kept").json()
        assert body["enrollment_current"] is True and body["enrollment_state"]["state"] == "current", body
        assert body["enrollment_state"]["sample_kept"] is True

        # A release changes the bank format: the stored bank is now an older one.
        meta_path = bank_dir(path) / "enrollment.json"
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": "mouthbank-v0"}))
        body = client.get("/v1/avatars/kept").json()
        assert body["status"] == "ready" and body["enrollment_current"] is False
        assert body["enrollment_state"]["state"] == "outdated", body
        # It keeps serving (with the warp engine) until it re-enrolled.
        r = client.post("/v1/lipsync", json={"avatar_id": "kept", "audio": "uploads/speech.wav"})
        assert r.status_code == 202, r.text

        assert enqueue_stale(settings, redis) == ["kept"]
        assert enqueue_stale(settings, redis) == []  # a second worker starting does not enqueue it again
        body = client.get("/v1/avatars/kept").json()
        assert body["enrollment_state"]["state"] == "reenrolling" and body["enrollment_state"]["reenroll_job_id"]

        job_id = body["enrollment_state"]["reenroll_job_id"]
        get_queue(Kind.lipsync, redis).empty()  # the render above is not what this test runs
        # The avatar worker's class, as the fleet runs it (its stop is not held by RQ's command channel).
        from workers.base import ServiceWorker

        ServiceWorker([get_queue(Kind.avatar, redis)], connection=redis, settings=settings).work(burst=True)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "finished" and job["result"]["reenrolled"] is True, job
        body = client.get("/v1/avatars/kept").json()
        assert body["enrollment_current"] is True and body["enrollment_state"]["state"] == "current", body
        assert body["manifest"]["enrollment"]["version"] == BANK_VERSION
