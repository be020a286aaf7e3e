"""ASR worker: an owned audio/video file -> text, language and timed segments."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from rq import get_current_job

from core.files import resolve_owned
from core.jobs import set_progress
from core.media import MediaError, decode_audio
from core.settings import Settings, get_settings
from models.asr import SAMPLE_RATE, load_model, transcribe

log = logging.getLogger(__name__)


def _model(settings: Settings):
    return load_model(settings.models_dir, settings.asr_model, settings.asr_threads)


def transcribe_audio(file: str, output_name: str, language: str | None = None) -> dict:
    """Job function of the `asr` queue; `file` is a reference to a file the service owns."""
    settings = get_settings()
    path = resolve_owned(settings, file)
    job = get_current_job()
    audio = decode_audio(path, SAMPLE_RATE)
    if audio.size / SAMPLE_RATE > settings.max_audio_s:
        raise MediaError(f"audio longer than {settings.max_audio_s:.0f} s")
    set_progress(job, 0.1)
    result = asdict(transcribe(_model(settings), audio, language))
    out = settings.kind_dir("asr") / f"{output_name}.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False))
    tmp.replace(out)
    result["file"] = f"asr/{out.name}"
    return result


def warm_up(settings: Settings) -> None:
    _model(settings)
