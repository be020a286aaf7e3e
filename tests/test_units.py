"""Pure functions: text splitting and routing, loudness, owned-file resolution, Chinese punctuation."""

from __future__ import annotations

import numpy as np
import pytest

from core.files import NotOwnedError, resolve_owned
from core.settings import Settings
from models.asr import zh_punctuate
from workers.tts import detect_language, normalize_loudness, plan_segments, split_sentences


def test_split_and_route():
    segs = plan_segments("你好。Hello there. How are you? 再见！", None)
    assert [s.language for s in segs] == ["zh", "en", "en", "zh"]
    assert detect_language("123") == "other"
    long = "，".join(["很长的句子"] * 60)
    assert all(len(p) <= 120 for p in split_sentences(long))
    assert plan_segments("Hello", "zh")[0].language == "zh"  # explicit override wins


def test_loudness_normalised_and_limited():
    t = np.arange(24000) / 24000
    quiet = 0.01 * np.sin(2 * np.pi * 200 * t).astype(np.float32)
    out = normalize_loudness(quiet)
    rms = np.sqrt(np.mean(out**2))
    assert abs(20 * np.log10(rms) + 20) < 1.0
    loud = np.concatenate([np.zeros(24000), 0.99 * np.sign(np.sin(2 * np.pi * 200 * t))]).astype(np.float32)
    assert np.abs(normalize_loudness(loud)).max() <= 10 ** (-1 / 20) + 1e-6


def test_resolve_owned_only_inside_data_dirs(tmp_path):
    settings = Settings(data_dir=tmp_path)
    (tmp_path / "tts").mkdir()
    (tmp_path / "tts" / "a.wav").write_bytes(b"x")
    (tmp_path / "secret.wav").write_bytes(b"x")
    assert resolve_owned(settings, "tests/a.wav") == (tmp_path / "tts" / "a.wav").resolve()
    assert resolve_owned(settings, "tts/a.wav").name == "a.wav"
    assert resolve_owned(settings, "http://host:8181/tests/a.wav").name == "a.wav"
    for bad in ["secret.wav", "../secret.wav", "tests/../secret.wav", "/etc/passwd", "tts/../../secret.wav",
                "redis/appendonly.aof", "", "tests/.hidden"]:
        with pytest.raises(NotOwnedError):
            resolve_owned(settings, bad)


def test_zh_punctuate():
    assert zh_punctuate("大家好 非常荣幸,我们开始吧") == "大家好，非常荣幸，我们开始吧。"


def test_transitional_rq_status_reads_as_queued():
    from redis import Redis
    from rq.job import Job, JobStatus

    from core.jobs import job_status

    job = Job("x", connection=Redis())  # no I/O: the status is set in memory
    job._status = JobStatus.READY_TO_ENQUEUE
    assert job_status(job) == JobStatus.QUEUED
    job._status = JobStatus.FINISHED
    assert job_status(job) == JobStatus.FINISHED
