"""Context-biased recognition (issue 18): does telling Whisper the room's context help it hear the user?

    python -m bench.voice_context [--noise-snr-db 10] [--languages zh,en]

bench.voice_latency's questions, spoken by the service's own TTS (the TTS worker's rendering, loudness
included) and cut by the socket's Silero endpointer exactly as a streamed question is (pre-roll, tail),
are recognised by the socket's decoder (core.voice) without and with the room's context
(core.voice.recognition_context: its job, its material's names, what it said last). The context of
question i is what the script responder answers to question i-1 in that bench (an acknowledgement, the
deferral when the question ends with "?", and the interview's next question for the room's job), the
first question's the opening one. Each run is clean speech and, with --noise-snr-db, the same speech
under white noise at that SNR (seeded), where recognition makes more errors to fix or to add.
Prints the CER per question and the mean for each condition, and the decode time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import emit
from bench.textmetrics import cer
from bench.voice_client import RATE, to_pcm16k
from bench.voice_latency import QUESTIONS


def spoken(settings, text: str, language: str) -> np.ndarray:
    """The question as the TTS worker renders it, as float32 at 16 kHz."""
    from workers.tts import plan_segments, render_segments

    audio, _phones = render_segments(settings, plan_segments(text, language), None)
    return to_pcm16k(audio, settings.tts_sample_rate).astype(np.float32) / 32768


def endpointed(settings, pcm: np.ndarray) -> np.ndarray:
    """What the socket recognises for this speech: the endpointer's utterance at its speech_end."""
    from core.voice import Endpointer

    ep = Endpointer(settings)
    stream = np.concatenate([np.zeros(int(0.5 * RATE), np.float32), pcm, np.zeros(RATE, np.float32)])
    for i in range(0, stream.size, 640):
        for kind, _fields in ep.push(stream[i:i + 640]):
            if kind == "speech_end":
                return ep.speech()
    return ep.speech()


def replies(language: str, count: int, job: str) -> list[str]:
    """What the script responder says before each question of the latency bench (its context)."""
    from core.conversations.responders import ACKS, DEFER, OPENING
    from core.interviews.bank import ordered_questions

    bank = ordered_questions(job, language)[1]
    sep = " " if language == "en" else ""
    out = [OPENING[language] + sep + bank[0]]
    for i in range(1, count):
        asked = QUESTIONS[language][i - 1]
        parts = [ACKS[language][(i - 1) % len(ACKS[language])]]
        if asked.rstrip().endswith(("?", "？")):
            parts.append(DEFER[language])
        out.append(sep.join(parts + [bank[i % len(bank)]]))
    return out


def context_for(language: str, job: str, said: str) -> str:
    """core.voice.recognition_context for a script room with this job that last said `said`."""
    sep = "。" if language == "zh" else ". "
    from core.voice import CONTEXT_CHARS

    return sep.join(p for p in (job, said) if p)[-CONTEXT_CHARS:]


def noisy(pcm: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    voiced = pcm[np.abs(pcm) > 0.01]
    level = float(np.sqrt(np.mean(voiced ** 2))) if voiced.size else 0.05
    noise = np.random.default_rng(seed).normal(0, level / 10 ** (snr_db / 20), pcm.size).astype(np.float32)
    return np.clip(pcm + noise, -1, 1)


def run(settings, language: str, job: str, snr: float | None) -> dict:
    from core.voice import _decode

    texts = QUESTIONS[language]
    contexts = replies(language, len(texts), job)
    rows = []
    for i, text in enumerate(texts):
        audio = endpointed(settings, spoken(settings, text, language))
        conditions = {"clean": audio}
        if snr is not None:
            conditions[f"snr{snr:g}db"] = noisy(audio, snr, seed=i)
        for name, x in conditions.items():
            plain = _decode(settings, x, language)
            biased = _decode(settings, x, language, context_for(language, job, contexts[i]))
            rows.append({"question": i, "condition": name, "reference": text,
                         "plain": plain.text, "plain_cer": round(cer(text, plain.text), 3), "plain_s": plain.seconds,
                         "biased": biased.text, "biased_cer": round(cer(text, biased.text), 3),
                         "biased_s": biased.seconds})
    summary = {}
    for name in dict.fromkeys(r["condition"] for r in rows):
        sel = [r for r in rows if r["condition"] == name]
        summary[name] = {k: round(float(np.mean([r[k] for r in sel])), 3)
                         for k in ("plain_cer", "biased_cer", "plain_s", "biased_s")}
        summary[name]["better"] = sum(r["biased_cer"] < r["plain_cer"] for r in sel)
        summary[name]["worse"] = sum(r["biased_cer"] > r["plain_cer"] for r in sel)
    return {"job": job, "summary": summary, "each": rows}


def main() -> None:
    from core.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default="zh,en")
    parser.add_argument("--noise-snr-db", type=float, default=10.0, help="also under white noise (0: clean only)")
    parser.add_argument("--job", default="", help="the room's job (default none, as bench.voice_latency's rooms)")
    args = parser.parse_args()
    settings = get_settings()
    started = time.monotonic()
    figures = {language: run(settings, language, args.job, args.noise_snr_db or None)
               for language in args.languages.split(",")}
    emit("voice_context", {"asr_model": settings.asr_model, "beam_size": settings.voice_beam_size, **figures,
                           "seconds": round(time.monotonic() - started, 1)})


if __name__ == "__main__":
    main()
