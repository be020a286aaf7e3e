"""The `musetalk` engine through the shared pipeline, with a tiny synthetic checkpoint in the
official layout: avatar preparation caches latents, the lip-sync job renders an MP4."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from avatars.demo import write_demo_portrait
from core.media import write_wav
from core.settings import get_settings
from models.weights import musetalk_missing


@pytest.fixture
def musetalk_env(tmp_path, monkeypatch):
    from lipsync.engines import load_engine
    from models.musetalk_net.synthetic import write_synthetic_checkpoint

    models = tmp_path / "models"
    write_synthetic_checkpoint(models, version="v15", tiny=True)
    monkeypatch.setenv("MTL_MODELS_DIR", str(models))
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    load_engine.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    load_engine.cache_clear()


def test_prepare_then_render_mp4_with_tiny_musetalk(musetalk_env, tmp_path):
    from workers.avatar import prepare_avatar
    from workers.lipsync import render_lipsync_video

    settings = musetalk_env
    assert musetalk_missing(settings.models_dir) == []
    portrait = write_demo_portrait(settings.kind_dir("uploads") / "portrait.png")
    meta = prepare_avatar(f"uploads/{portrait.name}", "tiny", {})
    assert meta["has_latents"] is True
    latents = np.load(settings.data_dir / "avatars" / "tiny" / "latents.npy")
    assert latents.shape[0] == meta["frames"] and latents.shape[1] == 8

    t = np.arange(int(1.6 * 16000)) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    write_wav(settings.kind_dir("uploads") / "speech.wav", speech, 16000)
    result = render_lipsync_video("tiny", "mt1", audio="uploads/speech.wav", engine="musetalk")
    assert result["engine"] == "musetalk" and result["frames"] == 40
    out = settings.data_dir / "lipsync" / "mt1.mp4"
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json",
                                       str(out)], capture_output=True, check=True).stdout)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    assert int(video["nb_read_frames"]) == 40 and video["pix_fmt"] == "yuv420p"
    assert abs(float(audio["duration"]) - 1.6) < 0.05
    assert (int(video["width"]), int(video["height"])) == (meta["width"], meta["height"])


def test_api_check_names_missing_official_files(tmp_path):
    missing = musetalk_missing(tmp_path)
    assert "musetalkV15/unet.pth" in missing and any(m.startswith("whisper/pytorch_model.bin") for m in missing)
