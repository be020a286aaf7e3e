"""Audio condition of MuseTalk: whisper-tiny encoder hidden states cut into one window per video frame.

The whisper encoder turns each 30 s window of 16 kHz audio (a [80, 3000] log-mel) into 1500 steps,
50 per second. All 5 hidden states (input embedding + 4 layers) are kept: [T, 5, 384]. Video frame i
at 25 fps takes steps 2i-4 .. 2i+5 (80 ms before, 120 ms after); the 10 x 5 states become its 50 audio
tokens of width 384. The index arithmetic is kept in pure numpy functions so it can be checked without
a model.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FEATURE_RATE = 50  # encoder steps per second: mel hop 160 samples, then the stride-2 conv
SAMPLES_PER_STEP = SAMPLE_RATE // FEATURE_RATE
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # whisper's encoder only accepts exactly 30 s
PADDING_LEFT = 2  # official audio_padding_length_left / _right, in video frames
PADDING_RIGHT = 2
WINDOW_STEPS = 2 * (PADDING_LEFT + PADDING_RIGHT + 1)  # 10 steps per video frame

# v1.5 pads the clip with zero features; v1.0 (audio2feature.get_sliced_feature) repeats the edge step.
EDGE_MODES = ("zero", "clamp")


def n_frames_for(n_samples: int, fps: int = 25) -> int:
    """Video frames for a clip: duration * fps rounded half up (Python's round() would round 0.5 to even)."""
    return int(math.floor(n_samples * fps / SAMPLE_RATE + 0.5))


def n_steps_for(n_samples: int) -> int:
    """Encoder steps that start inside the audio; later steps only saw whisper's zero padding."""
    return -(-n_samples // SAMPLES_PER_STEP)


def frame_window_indices(frame_index: int, n_feature_steps: int, fps: int = 25, edge: str = "zero") -> np.ndarray:
    """The 10 feature-step indices of one video frame; -1 marks a step outside the clip (a zero row).

    At 25 fps frame i gets 2i-4 .. 2i+5. Other rates follow the official arithmetic: v1.5 starts at
    floor(i * 50/fps) - floor(50/fps) * 2, v1.0 at int(i * 50/fps) - 4 and clamps to the clip's ends.
    """
    return _index_rows(np.array([frame_index]), n_feature_steps, fps, edge)[0]


def window_index_table(n_frames: int, n_feature_steps: int, fps: int = 25, edge: str = "zero") -> np.ndarray:
    """[n_frames, 10] int64 feature-step indices for frames 0 .. n_frames-1 (see frame_window_indices)."""
    return _index_rows(np.arange(n_frames), n_feature_steps, fps, edge)


def _index_rows(frames: np.ndarray, n_feature_steps: int, fps: int, edge: str) -> np.ndarray:
    if edge not in EDGE_MODES:
        raise ValueError(f"edge must be one of {EDGE_MODES}, not {edge!r}")
    multiplier = FEATURE_RATE / fps
    if edge == "zero":
        starts = np.floor(frames * multiplier).astype(np.int64) - math.floor(multiplier) * PADDING_LEFT
    else:
        starts = (frames * multiplier).astype(np.int64) - 2 * PADDING_LEFT
    table = starts[:, None] + np.arange(WINDOW_STEPS, dtype=np.int64)[None, :]
    if edge == "clamp" and n_feature_steps > 0:
        return np.clip(table, 0, n_feature_steps - 1)
    table[(table < 0) | (table >= n_feature_steps)] = -1
    return table


def gather_frame_windows(states: np.ndarray, n_frames: int, fps: int = 25, edge: str = "zero") -> np.ndarray:
    """[T, S, D] encoder states -> [n_frames, 10*S, D] audio tokens, step-major like the official
    rearrange 'b c h w -> b (c h) w' (token k is step k // S, hidden state k % S)."""
    n_steps, n_states, dim = states.shape
    padded = np.concatenate([np.zeros((1, n_states, dim), states.dtype), states])
    table = window_index_table(n_frames, n_steps, fps, edge) + 1  # -1 (outside) -> row 0 (zeros)
    return padded[table].reshape(n_frames, WINDOW_STEPS * n_states, dim)


def window_bounds(n_samples: int) -> list[tuple[int, int]]:
    """Sample ranges of the consecutive 30 s windows the encoder sees (the last one is shorter)."""
    return [(start, min(start + WINDOW_SAMPLES, n_samples)) for start in range(0, n_samples, WINDOW_SAMPLES)]


def build_feature_extractor(preprocessor: dict) -> WhisperFeatureExtractor:
    """WhisperFeatureExtractor from a preprocessor_config.json dict, with explicit arguments so nothing
    is looked up on a model hub."""
    return WhisperFeatureExtractor(
        feature_size=preprocessor.get("feature_size", 80),
        sampling_rate=preprocessor.get("sampling_rate", SAMPLE_RATE),
        hop_length=preprocessor.get("hop_length", 160),
        chunk_length=preprocessor.get("chunk_length", 30),
        n_fft=preprocessor.get("n_fft", 400),
        padding_value=preprocessor.get("padding_value", 0.0),
        return_attention_mask=False,
    )


@torch.inference_mode()
def encoder_states(encoder, extractor: WhisperFeatureExtractor, audio: np.ndarray, *, device: torch.device,
                   dtype: torch.dtype, windows_per_batch: int = 4) -> np.ndarray:
    """[T, 5, 384] float32 hidden states of the whole clip, T = ceil(samples / 320).

    Long audio is encoded in 30 s windows (the encoder's fixed input) and the steps concatenated; a few
    windows go through the encoder together to bound attention memory on long clips.
    """
    bounds = window_bounds(audio.size)
    parts = []
    for first in range(0, len(bounds), windows_per_batch):
        chunk = bounds[first:first + windows_per_batch]
        mel = extractor([audio[a:b] for a, b in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        hidden = encoder(mel.to(device=device, dtype=dtype), output_hidden_states=True).hidden_states
        stacked = torch.stack(hidden, dim=2).float().cpu().numpy()  # [B, 1500, 5, 384]
        parts.extend(stacked[i, :n_steps_for(b - a)] for i, (a, b) in enumerate(chunk))
    return np.concatenate(parts)


def frame_features(encoder, extractor: WhisperFeatureExtractor, audio: np.ndarray, *, fps: int = 25,
                   edge: str = "zero", device: torch.device, dtype: torch.dtype) -> np.ndarray:
    """[round(duration * fps), 10 * n_states, d_model] float32 audio tokens of a 16 kHz mono clip."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 16 kHz audio as a 1-D array, got shape {audio.shape}")
    n_frames = n_frames_for(audio.size, fps)
    n_states = len(encoder.layers) + 1
    if audio.size == 0:
        return np.zeros((0, WINDOW_STEPS * n_states, encoder.config.d_model), np.float32)
    states = encoder_states(encoder, extractor, audio, device=device, dtype=dtype)
    log.debug("whisper: %d samples -> %d steps -> %d frames", audio.size, states.shape[0], n_frames)
    return gather_frame_windows(states, n_frames, fps, edge)
