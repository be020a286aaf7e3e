"""ASR real-time factor (faster-whisper base, CPU int8) on Mandarin and English speech.

    python -m bench.asr_rtf [--repeats 3]

Uses ../shared/media/speech-zh-sun.wav when present, otherwise TTS speech made on the spot.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from bench.common import EN_TEXT, ZH_TEXT, emit
from core.media import decode_audio
from core.settings import PROJECT_ROOT, get_settings
from models.asr import SAMPLE_RATE, load_model, transcribe
from workers.tts import plan_segments, render_segments
from scipy.signal import resample_poly


def _tts(text: str):
    settings = get_settings()
    audio, _ = render_segments(settings, plan_segments(text, None), None)
    return resample_poly(audio, 2, 3).astype("float32")  # 24 kHz -> 16 kHz


def measure(model, audio, language: str, repeats: int) -> dict:
    duration = audio.size / SAMPLE_RATE
    times, text = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        text = transcribe(model, audio, language).text
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"audio_s": round(duration, 2), "asr_s_best": round(best, 3), "rtf_best": round(best / duration, 4),
            "rtf_mean": round(sum(times) / len(times) / duration, 4), "text": text}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    model = load_model(settings.models_dir, settings.asr_model, settings.asr_threads)
    shared = PROJECT_ROOT.parent / "shared" / "media" / "speech-zh-sun.wav"
    zh = decode_audio(Path(shared)) if shared.exists() else _tts(ZH_TEXT)
    transcribe(model, zh[: SAMPLE_RATE * 3], "zh")  # warm-up
    emit("asr_rtf", {
        "zh": {"source": shared.name if shared.exists() else "tts", **measure(model, zh, "zh", args.repeats)},
        "en": {"source": "tts", **measure(model, _tts(EN_TEXT), "en", args.repeats)},
        "auto_language_zh": measure(model, zh, None, 1),
    })


if __name__ == "__main__":
    main()
