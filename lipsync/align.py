"""Phone times for uploaded English speech: the recogniser's words, force-aligned to the sound.

Speech the fleet synthesises carries its phones (lipsync.visemes); uploaded speech has none, and word
times alone are too coarse to place a vowel or a closure (session 7: phones spread over faster-whisper's
word times lowered the opening r from 0.40 to 0.24 on pd-reagan-farewell). Here the bundled Whisper
transcribes, and pocketsphinx (its US English acoustic model and CMU dictionary ship inside the PyPI
wheel: nothing is downloaded) aligns each stretch of words to the audio at 10 ms, phone by phone.

An enrolled presenter gets a third audio-to-mouth mapping from these phones (MouthBank.phones): which
phone is being said, and which are either side, says whether the lips are shut (m, b, p), touching
the teeth (f, v), rounded or wide open, whoever speaks and whatever the room sounds like. Only
English: other languages keep the acoustic mappings.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lipsync.visemes import Phone

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
LANGUAGE = "en"  # the only language pocketsphinx's bundled model knows
OTHER_LANGUAGE = "zh"  # the other language the service speaks (TTS, rooms, interviews)
SILENCE, UNKNOWN = "SIL", "SPN"  # SPN: a stretch of speech whose word the dictionary does not have
ARPABET = (SILENCE, "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
           "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW",
           "V", "W", "Y", "Z", "ZH")
# How far each phone parts the lips (0 shut .. 1 wide open), from articulatory phonetics, not fitted:
# with it a presenter enrolled from a few seconds, who said only some of the phones, still hears the
# rest as more or less open.
OPENNESS = {"AA": 1.0, "AE": 0.9, "AW": 0.9, "AY": 0.85, "AO": 0.85, "AH": 0.7, "EH": 0.7, "OY": 0.7, "EY": 0.6,
            "OW": 0.6, "ER": 0.5, "HH": 0.5, "IH": 0.45, "K": 0.45, "G": 0.45, "UH": 0.4, "L": 0.4, "NG": 0.4,
            "TH": 0.35, "DH": 0.35, "T": 0.35, "D": 0.35, "R": 0.35, "IY": 0.3, "UW": 0.3, "Y": 0.3, "N": 0.3,
            "SH": 0.3, "ZH": 0.3, "CH": 0.3, "JH": 0.3, "S": 0.25, "Z": 0.25, "W": 0.2, "F": 0.1, "V": 0.1,
            "B": 0.0, "P": 0.0, "M": 0.0, SILENCE: 0.0, UNKNOWN: 0.3}
ROUNDED = frozenset({"UW", "UH", "OW", "OY", "W", "AO", "ER", "SH", "ZH", "CH", "JH", "R"})
BILABIAL, LABIODENTAL = frozenset({"B", "P", "M"}), frozenset({"F", "V"})
N_DESCRIPTORS = 5  # openness, bilabial, labiodental, rounded, speaking


def _phone_table() -> tuple[np.ndarray, dict[str, int]]:
    """Each symbol's row of features (one-hot over ARPABET, UNKNOWN none; then its descriptors)."""
    symbols = list(ARPABET) + [UNKNOWN]
    table = np.zeros((len(symbols), len(ARPABET) + N_DESCRIPTORS), np.float32)
    for i, symbol in enumerate(symbols):
        if symbol in ARPABET:
            table[i, i] = 1.0
        table[i, len(ARPABET):] = (OPENNESS[symbol], symbol in BILABIAL, symbol in LABIODENTAL, symbol in ROUNDED,
                                   symbol != SILENCE)
    return table, {symbol: i for i, symbol in enumerate(symbols)}


_TABLE, _ROWS = _phone_table()


@dataclass(frozen=True)
class AlignOptions:
    # Words are aligned in stretches split at pauses and kept short: pocketsphinx's search lost its
    # way on sentences of 20 words (2 of 9 of pd-tedlieu-wda's failed to align) and never on these.
    max_gap_s: float = 0.15
    max_words: int = 8
    pad_s: float = 0.15  # audio either side of a stretch's words (Whisper's word times are rough)


@dataclass(frozen=True)
class PhoneFeatureOptions:
    """Which phone each video frame is in, and the frames either side (+-120 ms: the lips anticipate
    the next phone and leave the last one slowly). Chosen on pd-reagan-farewell and pd-tedlieu-wda
    (see MouthBank.phones)."""

    fps: int = 25
    context: int = 3


_lock = threading.Lock()  # one pocketsphinx decoder per process, which is not safe across threads


@lru_cache(maxsize=1)
def _decoder():
    from pocketsphinx import Decoder

    # No language model: alignment follows the words given. Wide beams, as the words are known.
    return Decoder(samprate=SAMPLE_RATE, bestpath=False, lm=None, loglevel="FATAL",
                   beam=1e-120, wbeam=1e-100, pbeam=1e-120)


def _words(audio_16k: np.ndarray, models_dir: Path | None) -> list | None:
    """Whisper's words with their times, or None when the speech is not English."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from lipsync.phonetic import whisper

    audio = np.asarray(audio_16k, np.float32)
    # Whisper writes words into silence: 112 of them into a room's 0.2 s warm-up silence, 7 s of
    # decoding that held the publisher past its lease. Only speech is transcribed (its bundled VAD).
    if not get_speech_timestamps(audio, VadOptions()):
        return None
    model = whisper(models_dir)
    if not _english(audio, models_dir):
        return None
    # Temperature 0 only: the same speech always gives the same words, so two renders are identical.
    segments, _ = model.transcribe(audio, language=LANGUAGE, beam_size=5, temperature=0.0, vad_filter=True,
                                   word_timestamps=True, condition_on_previous_text=False)
    return [w for segment in segments for w in (segment.words or [])]


def _english(audio: np.ndarray, models_dir: Path | None) -> bool:
    """English rather than Mandarin, the other language the service speaks. Whisper's own first choice
    is not asked: for a British speaker (long-cameron, found in a reported run) the base model heard
    Welsh at 0.95 and English at 0.04, then wrote Welsh, and the presenter got no phone mapping."""
    from lipsync.phonetic import language_scores

    score = language_scores(audio, models_dir)
    return score.get(LANGUAGE, 0.0) > score.get(OTHER_LANGUAGE, 0.0)


def _spelling(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower()).strip("'")


def _stretches(words: list, opts: AlignOptions) -> list[list]:
    out, current = [], []
    for word in words:
        if current and (word.start - current[-1].end > opts.max_gap_s or len(current) >= opts.max_words):
            out.append(current)
            current = []
        current.append(word)
    return out + [current] if current else out


def _force_align(pcm: np.ndarray, spellings: list[str]) -> list[tuple[str, float, float]]:
    """(phone, start, end) in seconds into `pcm` for the words `spellings`, or [] when they do not fit."""
    decoder = _decoder()
    raw = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    # The front end carries its noise estimate and cepstral mean over from the last utterance: without
    # a fresh start the same speech got other phone times after other speech had been aligned (by
    # 10 ms, on pd-tedlieu-wda), and a render depended on what its worker had rendered before.
    decoder.reinit_feat()
    try:
        decoder.set_align_text(" ".join(spellings))
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        return [(p.name, p.start / 100.0, (p.start + p.duration) / 100.0)
                for word in decoder.get_alignment() for p in word]
    except RuntimeError:  # "Failed to set up sub-word alignment": the search lost the words
        return []


def _align_stretch(audio: np.ndarray, stretch: list, opts: AlignOptions) -> list[tuple[str, float, float]]:
    """Phones of one stretch of words; a word the dictionary lacks, or a stretch that will not align,
    leaves its time as UNKNOWN speech."""
    spellings = [_spelling(w.word) for w in stretch]
    start, end = max(0.0, stretch[0].start - opts.pad_s), stretch[-1].end + opts.pad_s
    if all(spelling and _decoder().lookup_word(spelling) for spelling in spellings):
        got = _force_align(audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)], spellings)
        if got:
            return [(name, a + start, b + start) for name, a, b in got]
    if len(stretch) == 1:
        return [(UNKNOWN, stretch[0].start, stretch[0].end)]
    return [p for w in stretch for p in _align_stretch(audio, [w], opts)]


def align_speech(audio_16k: np.ndarray, models_dir: Path | None = None,
                 opts: AlignOptions = AlignOptions()) -> list[Phone] | None:
    """ARPAbet phones (SIL between words) with their times, or None for speech that is not English
    or has no words."""
    words = _words(audio_16k, models_dir)
    if not words:
        return None
    phones, last = [], 0.0
    with _lock:
        for stretch in _stretches(words, opts):
            for name, a, b in sorted(_align_stretch(audio_16k, stretch, opts), key=lambda p: p[1]):
                if b > last:  # stretches' padding overlaps: the earlier stretch keeps its phones
                    phones.append(Phone(name, max(a, last), b))
                    last = b
    return phones or None


def phone_features(phones: list[Phone], n_frames: int, opts: PhoneFeatureOptions = PhoneFeatureOptions()) -> np.ndarray:
    """[n_frames, (2*context+1)*(len(ARPABET)+N_DESCRIPTORS)] float32: each frame's phone (one-hot, and
    its openness, closure, rounding) and its neighbours'. Frames outside every phone are silence."""
    label = np.zeros(n_frames, np.int64)  # SILENCE
    for phone in phones:
        row = _ROWS.get(phone.symbol)
        if row is None:
            continue
        # The frames whose centre-time falls inside the phone.
        first, last = int(np.ceil(phone.start * opts.fps - 0.5)), int(np.ceil(phone.end * opts.fps - 0.5))
        label[max(0, first):min(n_frames, last)] = row
    offsets = np.arange(-opts.context, opts.context + 1)
    idx = np.clip(np.arange(n_frames)[:, None] + offsets[None, :], 0, max(0, n_frames - 1))
    return _TABLE[label[idx]].reshape(n_frames, -1)
