"""Success shapes and every listed bad input, for legacy and v1 endpoints, against the real service."""

from __future__ import annotations

import pytest

from conftest import poll_job
from speech import tone_wav


def _legacy_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["message"], str) and body["message"]
    return body


def _v1_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


# ---- legacy ----

@pytest.mark.parametrize("params", [{}, {"msg": ""}, {"msg": "   "}])
def test_legacy_tts_missing_or_empty(api, params):
    _legacy_error(api.get("/tts", params=params), 400)


def test_legacy_tts_too_long(api):
    _legacy_error(api.get("/tts", params={"msg": "长" * 501}), 422)


@pytest.mark.parametrize("url", [None, "", "/etc/passwd", "tests/../../etc/passwd", "../results/x.wav",
                                 "tests/does-not-exist.wav", "http://evil.example/tests/x.wav"])
def test_legacy_asr_rejects_unowned(api, url):
    params = {} if url is None else {"url": url}
    body = _legacy_error(api.get("/asr", params=params), 400 if not url else 404)
    assert "passwd" not in body.get("message", "") or "not a file" in body["message"]


def test_legacy_download_404_and_cors(api):
    _legacy_error(api.get("/tests/nope.wav"), 404)
    _legacy_error(api.get("/tests/..%2F..%2Fetc%2Fpasswd"), 404)
    job = poll_job(api, api.post("/v1/tts", json={"text": "Download me."}).json()["job_id"])
    r = api.get(f"/{job['result']['legacy_path']}", headers={"Origin": "http://player.example"})
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    assert r.headers.get("access-control-allow-origin") in ("*", "http://player.example")


def test_legacy_asr_of_uploaded_file(api):
    job = poll_job(api, api.post("/v1/tts", json={"text": "今天天气很好。"}).json()["job_id"])
    wav = api.get(job["result"]["url"]).content
    up = api.post("/v1/files", files={"file": ("answer.wav", wav, "audio/wav")})
    assert up.status_code == 201, up.text
    body = up.json()
    assert body["legacy_path"].startswith("tests/") and body["duration_s"] > 0.5
    r = api.get("/asr", params={"url": body["legacy_path"]})
    assert r.status_code == 200 and "天气" in r.json()["message"]


# ---- v1 ----

@pytest.mark.parametrize("payload,status,code", [
    ({}, 400, "missing_parameter"),
    ({"text": ""}, 422, "invalid_input"),
    ({"text": "  "}, 422, "invalid_input"),
    ({"text": "x" * 501}, 422, "text_too_long"),
    ({"text": "hi", "language": "klingon"}, 422, "invalid_input"),
    ({"text": "hi", "voice": "../../etc"}, 422, "invalid_input"),
])
def test_v1_tts_bad_input(api, payload, status, code):
    _v1_error(api.post("/v1/tts", json=payload), status, code)


def test_v1_tts_not_json(api):
    r = api.post("/v1/tts", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_v1_job_unknown(api):
    _v1_error(api.get("/v1/jobs/0123456789abcdef"), 404, "unknown_job")
    _v1_error(api.get("/v1/jobs/bad*id"), 404, "unknown_job")


def test_failed_job_keeps_its_error(api):
    r = api.post("/v1/tts", json={"text": "。。。！！"})
    assert r.status_code == 202
    job = poll_job(api, r.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["type"] == "ValueError" and "nothing to speak" in job["error"]["message"]


def test_v1_asr_needs_input(api):
    _v1_error(api.post("/v1/asr", data={}), 400, "missing_parameter")


def test_v1_asr_source_not_owned(api):
    _v1_error(api.post("/v1/asr", data={"source": "/etc/passwd"}), 404, "file_not_owned")


def test_v1_upload_too_large(api):
    _v1_error(api.post("/v1/files", files={"file": ("big.wav", b"\0" * (3 * 1024 * 1024 + 10))}), 413,
              "upload_too_large")
    _v1_error(api.post("/v1/asr", files={"file": ("big.wav", b"\0" * (3 * 1024 * 1024 + 10))}), 413,
              "upload_too_large")


def test_v1_upload_not_audio(api):
    _v1_error(api.post("/v1/files", files={"file": ("a.wav", b"this is not audio at all" * 100)}), 422,
              "undecodable_audio")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 200
    _v1_error(api.post("/v1/asr", files={"file": ("a.mp3", png)}), 422, "undecodable_audio")
    _v1_error(api.post("/v1/files", files={"file": ("a.wav", b"")}), 400, "empty_upload")


def test_v1_upload_too_long(api):
    _v1_error(api.post("/v1/files", files={"file": ("long.wav", tone_wav(31.0, 8000))}), 422, "audio_too_long")


def test_v1_upload_ok_and_download(api):
    r = api.post("/v1/files", files={"file": ("tone.wav", tone_wav(1.0))})
    assert r.status_code == 201
    body = r.json()
    assert abs(body["duration_s"] - 1.0) < 0.05
    assert api.get(body["url"]).content[:4] == b"RIFF"
    _v1_error(api.get("/v1/files/etc/passwd"), 404, "not_found")
    _v1_error(api.get("/v1/files/uploads/nothing.wav"), 404, "not_found")


def test_health_and_docs(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready["status"] == "ready" and ready["queues"]["tts"]["workers"] >= 1
    spec = api.get("/openapi.json").json()
    for path in ("/tts", "/asr", "/v1/tts", "/v1/asr", "/v1/jobs/{job_id}", "/v1/files", "/readyz"):
        assert path in spec["paths"], path
    assert api.get("/docs").status_code == 200


def test_cancel_job(api):
    done = poll_job(api, api.post("/v1/tts", json={"text": "Finished already."}).json()["job_id"])
    _v1_error(api.delete(f"/v1/jobs/{done['id']}"), 409, "job_not_cancellable")
    _v1_error(api.delete("/v1/jobs/0123456789abcdef"), 404, "unknown_job")
