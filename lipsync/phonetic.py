"""Phonetic context from the bundled Whisper encoder, for speech that has no phone times.

Speech the fleet synthesises carries its phones (lipsync.visemes). Uploaded speech does not, and log-mels
learned on a presenter's own sample carry their voice and room along with the articulation. Whisper's
encoder (the recogniser the fleet already ships, CPU int8) was trained to hear phones across speakers and
channels: its output, pooled to video frames with context either side, is what an enrollment's second
mapping reads (MuseTalk reads the same kind of features). Chosen on pd-tedlieu-wda and pd-reagan-farewell
(enroll 55%, test the rest, predicted inner-lip opening r): log-mel ridge 0.50 / 0.43, encoder ridge
0.64 / 0.39, the two averaged 0.64 / 0.51; enrolled on 3, 5 and 10 s windows (mean over windows, tested
on the rest of the clip) the average beat the log-mel ridge at every length: 0.31 / 0.33 against 0.26 /
0.29 at 3 s, 0.49 / 0.54 against 0.43 / 0.51 at 10 s.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.lru import Lru

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ENCODER_HZ = 50  # Whisper's encoder frames: 20 ms
WINDOW_S = 30  # the encoder's fixed input: 30 s of log-mels, zero padded
MEL_HOP = 160  # the feature extractor's hop (10 ms)


@dataclass(frozen=True)
class EncoderOptions:
    fps: int = 25
    context: int = 4  # video frames either side (+-160 ms); +-2 and +-6 did no better on the dev clips


@lru_cache(maxsize=1)
def _model(models_dir: str):
    from models.asr import load_model

    return load_model(Path(models_dir))


def whisper(models_dir: Path | None = None):
    """The bundled Whisper (faster-whisper) the lip-sync mappings read, loaded once per process;
    `models_dir` defaults to the settings'."""
    if models_dir is None:
        from core.settings import get_settings

        models_dir = get_settings().models_dir
    return _model(str(models_dir))


def encoder_states(audio_16k: np.ndarray, models_dir: Path | None = None) -> np.ndarray:
    """[m, D] encoder output at ENCODER_HZ for the whole of `audio_16k`, window by window."""
    return _encoded(audio_16k, models_dir)[0]


def language_scores(audio_16k: np.ndarray, models_dir: Path | None = None) -> dict[str, float]:
    """Whisper's language probabilities for `audio_16k` (its first 30 s, as WhisperModel.detect_language
    reads them), from the encoder pass encoder_states makes: uploaded English speech needs both, and
    encoding a window twice cost about 0.4 s of a room's start."""
    import ctranslate2

    first = _encoded(audio_16k, models_dir)[1]
    results = whisper(models_dir).model.detect_language(ctranslate2.StorageView.from_array(np.array(first[None])))[0]
    return {token[2:-2]: float(prob) for token, prob in results}


# The utterances whose encoder pass is kept: the one being prepared, and one more thread's.
_recent: Lru[tuple[np.ndarray, np.ndarray]] = Lru(2)


def _encoded(audio_16k: np.ndarray, models_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(encoder_states, the first window's whole output [1500, D]) of the speech, kept for the last
    few utterances (keyed by their samples)."""
    model = whisper(models_dir)
    audio = np.ascontiguousarray(audio_16k, np.float32)
    key = (id(model), len(audio), hashlib.blake2b(audio.tobytes(), digest_size=16).digest())
    return _recent.get(key, lambda: _encode(model, audio))


def _encode(model, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from faster_whisper.audio import pad_or_trim

    mels = model.feature_extractor(audio)
    per_window = WINDOW_S * SAMPLE_RATE // MEL_HOP
    wanted = int(np.ceil(len(audio) * ENCODER_HZ / SAMPLE_RATE))
    out, first = [], None
    for start in range(0, max(1, mels.shape[1]), per_window):
        part = mels[:, start:start + per_window]
        states = np.array(model.encode(pad_or_trim(part)))[0].astype(np.float32)
        first = states if first is None else first
        out.append(states[:(part.shape[1] + 1) // 2])
    states = np.concatenate(out)[:max(1, wanted)]
    states.flags.writeable = False  # shared between callers through _recent
    first.flags.writeable = False
    return states, first


def encoder_features(audio_16k: np.ndarray, n_frames: int, opts: EncoderOptions = EncoderOptions(),
                     models_dir: Path | None = None) -> np.ndarray:
    """[n_frames, (2*context+1)*D] float32: encoder states pooled to video frames, with context."""
    states = encoder_states(audio_16k, models_dir)
    per_frame = ENCODER_HZ // opts.fps
    m = len(states) // per_frame * per_frame
    if m == 0:
        states, m = np.repeat(states[:1], per_frame, axis=0), per_frame
    pooled = states[:m].reshape(-1, per_frame, states.shape[1]).mean(axis=1)
    offsets = np.arange(-opts.context, opts.context + 1)
    idx = np.clip(np.arange(n_frames)[:, None] + offsets[None, :], 0, len(pooled) - 1)
    return pooled[idx].reshape(n_frames, -1)
