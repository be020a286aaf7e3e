"""Speech recognition: faster-whisper with the bundled multilingual base model, CPU int8."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.weights import verify

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_ZH_PUNCT = str.maketrans({",": "，", "!": "！", "?": "？", ":": "：", ";": "；"})
_CJK_GAP = re.compile(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])")


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    segments: list[dict]
    duration_s: float


@lru_cache(maxsize=2)
def load_model(models_dir: Path, name: str = "whisper-base", threads: int = 2):
    from faster_whisper import WhisperModel

    path = verify(models_dir, name)
    log.info("loading ASR model %s from %s", name, path)
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)


@lru_cache(maxsize=1)
def _t2s():
    from opencc import OpenCC

    return OpenCC("t2s")


def transcribe(model, audio: np.ndarray, language: str | None = None) -> Transcript:
    if language is None:
        detected, _prob, _all = model.detect_language(audio)
        language = detected
    # No initial prompt: with this model a Simplified prompt made it guess homophones more often
    # than decoding freely and converting Traditional -> Simplified afterwards (measured on TTS speech).
    segments_iter, info = model.transcribe(audio, language=language, beam_size=5,
                                           vad_filter=True, condition_on_previous_text=False)
    segments = []
    for seg in segments_iter:
        text = seg.text.strip()
        if language == "zh":
            text = zh_punctuate(_t2s().convert(text))
        segments.append({"start": round(seg.start, 2), "end": round(seg.end, 2), "text": text})
    joiner = "" if language in ("zh", "ja") else " "
    return Transcript(text=joiner.join(s["text"] for s in segments).strip(), language=language,
                      segments=segments, duration_s=round(float(info.duration), 3))


def zh_punctuate(text: str) -> str:
    """Full-width punctuation, pauses between Chinese phrases as commas, and a final full stop."""
    text = _CJK_GAP.sub("，", text.translate(_ZH_PUNCT)).strip()
    if text and text[-1] not in "。！？…":
        text = text.rstrip("，、；：") + "。"
    return text


def transcribe_utterance(model, audio: np.ndarray, language: str, beam_size: int = 1) -> str:
    """One short utterance already cut by a VAD (live voice input): no second VAD pass, no
    timestamps, no language detection (the room's language or the client's hint)."""
    segments, _info = model.transcribe(audio, language=language, beam_size=beam_size, vad_filter=False,
                                       condition_on_previous_text=False, without_timestamps=True)
    parts = [seg.text.strip() for seg in segments]
    if language == "zh":
        return zh_punctuate(_t2s().convert("".join(parts))) if any(parts) else ""
    return " ".join(p for p in parts if p).strip()
