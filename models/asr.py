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
def load_model(models_dir: Path, name: str = "whisper-base", threads: int = 2, workers: int = 1):
    """`workers`: decodes that may run at once from different threads (CTranslate2's workers share
    the weights on the CPU: the same memory as one)."""
    from faster_whisper import WhisperModel

    path = verify(models_dir, name)
    log.info("loading ASR model %s from %s", name, path)
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=workers)


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



# The encoder's windows for an utterance, tried in turn: its own frames plus a pad, at least a minimum
# (frames of 10 ms). The shorter one decodes faster but sometimes stops after a word or repeats
# itself; a text implausible for the speech is decoded again in the next, then in the full 30 s.
WINDOWS = ((1000, 300), (1500, 500))
# A partial transcript's one window (shown while the speaker talks, never answered): the utterance
# plus 2 s, at least 3 s. It took 35-65% less CPU time than WINDOWS[0] for the same text on
# bench.voice_latency's 14 questions (bench/voice_asr_window.py), but live it once stopped after a word
# the longer window kept ("公司对新员工有什么" for "...有什么培训安排", twice in four bench runs),
# and the plausibility check cannot tell: the text the room answers keeps WINDOWS.
QUICK_WINDOW = (300, 200)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_TOKEN = re.compile(r"[A-Za-z0-9'’]+|[\u4e00-\u9fff]")
MIN_RATE = {"zh": 1.0, "en": 0.5}  # words (Chinese: characters) a second of speech, at the least


def transcribe_utterance(model, audio: np.ndarray, language: str, beam_size: int = 1, context: str | None = None,
                         quick: bool = False) -> str:
    """One short utterance already cut by a VAD (live voice input): no second VAD pass, no
    timestamps, no language detection (the room's language or the client's hint).

    Whisper's encoder is given the utterance plus a little (WINDOWS), not the 30 s window it was
    trained on (CTranslate2 accepts a shorter input): on this CPU a 3 s utterance's decode took
    0.1-0.2 s instead of 2-5 s, the same text on the questions measured (bench.voice_latency). A phrase
    decoded again is kept once (:func:`once`); a text in the wrong script, too short for the speech or
    running to the length limit is decoded again in a larger window, then the usual way.
    `context`: text Whisper reads as what was said before (its initial prompt), to bias it towards
    the words of the conversation. `quick`: a partial transcript, decoded once in QUICK_WINDOW (no
    second decode; a loop reads as no text yet)."""
    if quick:
        text = (_short_window(model, audio, language, beam_size, *QUICK_WINDOW, context) or "").strip()
        return zh_punctuate(_t2s().convert(text)) if language == "zh" and text else text
    text = None
    for min_frames, pad in WINDOWS:
        text = _short_window(model, audio, language, beam_size, min_frames, pad, context)
        if text is not None and _plausible(text, audio, language):
            break
        log.info("short-window decode (%d frames min) implausible: %r", min_frames, (text or "")[:60])
        text = None
    if text is None:
        segments, _info = model.transcribe(audio, language=language, beam_size=beam_size, vad_filter=False,
                                           condition_on_previous_text=False, without_timestamps=True,
                                           initial_prompt=context or None)
        text = "".join(seg.text for seg in segments) if language == "zh" else " ".join(s.text.strip() for s in segments)
    text = text.strip()
    if language == "zh":
        return zh_punctuate(_t2s().convert(text)) if text else ""
    return text


def _plausible(text: str, audio: np.ndarray, language: str) -> bool:
    """Seen otherwise: English words for a Mandarin question, one character for a 2 s sentence."""
    if text.strip() and (language == "zh") != bool(_CJK.search(text)):
        return False
    speech_s = audio.size / SAMPLE_RATE - 0.5  # the VAD's pre-roll and tail
    return speech_s < 1.2 or len(_TOKEN.findall(text)) >= MIN_RATE.get(language, 0.5) * speech_s


MAX_CONTEXT_TOKENS = 100  # of the prompt's "previous text" (Whisper allows 223): the newest kept


def _short_window(model, audio: np.ndarray, language: str, beam_size: int, min_frames: int, pad: int,
                  context: str | None = None) -> str | None:
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language=language)
    # The previous-text prompt as faster-whisper builds it for initial_prompt: <|startofprev|> text.
    previous = [tokenizer.sot_prev] + tokenizer.encode(" " + context.strip())[-MAX_CONTEXT_TOKENS:] \
        if context and context.strip() else []
    prompt = previous + list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
    features = model.feature_extractor(audio)
    frames = min(3000, max(min_frames, features.shape[1] + pad))
    features = np.pad(features, ((0, 0), (0, max(0, frames - features.shape[1]))))[:, :frames]
    # Tokens, the prompt's included (CTranslate2 counts them): speech has well under 12 a second.
    limit = len(prompt) + int(20 + 12 * audio.size / SAMPLE_RATE)
    result = model.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], np.float32)),
                                  [prompt], beam_size=beam_size, max_length=limit, suppress_blank=True)
    ids = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
    if len(ids) >= limit - len(prompt) - 1:
        return None  # a loop to the limit
    # A character whose bytes were cut by the end of the decode reads as U+FFFD: dropped.
    return once(tokenizer.decode(ids).replace("\ufffd", ""))


def once(text: str) -> str:
    """A text that says one phrase again (and again, or part of it again: "A B C A B C A"), as the
    short window sometimes decodes, cut to the phrase once. Only when at least 2 words or characters
    repeat (3 of one), so "谢谢" or "Yes. Yes." stay as said."""
    tokens = list(_TOKEN.finditer(text))
    words = [t.group().lower() for t in tokens]
    for k in range(1, len(words) - 1):  # the shortest phrase first
        if len(words) - k >= (3 if k == 1 else 2) and all(words[i] == words[i - k] for i in range(k, len(words))):
            return text[:tokens[k].start()].rstrip(" ，,、")
    return text
