"""Lip-sync engines behind one interface and a registry.

An engine turns (avatar, 16 kHz audio, cycle start) into composed full frames, yielded one at
a time so a consumer (an MP4 writer or a live stream) can send the first frames before the
utterance is fully rendered. Preparation, compositing and encoding are shared.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from avatars.compose import blend_region
from avatars.store import Avatar
from lipsync.mouth import MouthTrack, analyse
from lipsync.warp import WarpOptions, render_mouth

log = logging.getLogger(__name__)

ENGINES = ("auto", "exemplar", "warp", "musetalk")


class LipSyncEngine(Protocol):
    name: str

    def frames(self, avatar: Avatar, audio_16k: np.ndarray, start: int, n_frames: int,
               track: MouthTrack | None = None) -> Iterator[np.ndarray]: ...


class WarpEngine:
    name = "warp"

    def __init__(self, options: WarpOptions = WarpOptions()) -> None:
        self.options = options

    def render_frame(self, avatar: Avatar, cycle_index: int, open_amount: float, width: float,
                     closure: float = 0.0) -> np.ndarray:
        frame = avatar.frame(cycle_index)
        out = render_mouth(frame, avatar.landmarks_at(cycle_index), open_amount, width, self.options, closure)
        if out is not None:
            blend_region(frame, *out)
        return frame

    def frames(self, avatar, audio_16k, start, n_frames, track=None):
        track = track or analyse(audio_16k, avatar.fps, n_frames)
        # The phones' m, b and p (speech the fleet synthesised) shut the lips, also where the photo has
        # them parted; audio without phones has no closures.
        closure = track.closure if track.closure is not None else np.zeros(n_frames, np.float32)
        for k in range(n_frames):
            yield self.render_frame(avatar, start + k, float(track.open[k]), float(track.width[k]), float(closure[k]))


class MuseTalkLipSync:
    """The official MuseTalk network (GPU engine; slow but correct on CPU) over the shared pipeline."""

    name = "musetalk"

    def __init__(self, models_dir: Path, version: str = "v15", batch_size: int = 8) -> None:
        from models.musetalk_net import load_model

        self.model = load_model(models_dir, version=version)
        self.batch_size = batch_size

    def _crop(self, avatar: Avatar, ci: int, frame: np.ndarray) -> np.ndarray:
        import cv2

        x1, y1, x2, y2 = avatar.box_at(ci)
        size = self.model.crop_size
        return cv2.cvtColor(cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LANCZOS4),
                            cv2.COLOR_BGR2RGB)

    def prepare_latents(self, frames_dir: Path, boxes: np.ndarray) -> np.ndarray:
        """[N,8,32,32] latents of every prepared frame's face crop, for the avatar cache."""
        import cv2

        out = []
        for b0 in range(0, len(boxes), self.batch_size):
            crops = []
            for i in range(b0, min(len(boxes), b0 + self.batch_size)):
                frame = cv2.imread(str(frames_dir / f"{i:06d}.jpg"))
                x1, y1, x2, y2 = (int(v) for v in boxes[i])
                size = self.model.crop_size
                crops.append(cv2.cvtColor(cv2.resize(frame[y1:y2, x1:x2], (size, size),
                                                     interpolation=cv2.INTER_LANCZOS4), cv2.COLOR_BGR2RGB))
            out.append(self.model.encode_crops(np.stack(crops)))
        return np.concatenate(out).astype(np.float32)

    def frames(self, avatar, audio_16k, start, n_frames, track=None):
        import cv2

        feats = self.model.audio_features(audio_16k, fps=avatar.fps)
        feats = feats[:n_frames] if len(feats) >= n_frames else np.concatenate(
            [feats, np.zeros((n_frames - len(feats), *feats.shape[1:]), feats.dtype)])
        for b0 in range(0, n_frames, self.batch_size):
            idx = [start + k for k in range(b0, min(n_frames, b0 + self.batch_size))]
            frames = [avatar.frame(ci) for ci in idx]
            latents = [avatar.latents_at(ci) for ci in idx]
            if any(lat is None for lat in latents):
                latents = list(self.model.encode_crops(np.stack([self._crop(avatar, ci, f)
                                                                 for ci, f in zip(idx, frames)])))
            crops = self.model.render_crops(np.stack(latents), feats[b0:b0 + len(idx)])
            for ci, frame, crop in zip(idx, frames, crops):
                blend_region(frame, avatar.box_at(ci), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), avatar.mask_at(ci))
                yield frame


class AutoEngine:
    """The presenter's own mouth (`exemplar`) where the avatar was enrolled from talking footage,
    the `warp` fallback elsewhere: decided per avatar, so rooms and renders need no setting."""

    name = "auto"

    def __init__(self, warp: WarpEngine) -> None:
        from lipsync.exemplar import ExemplarEngine

        self.exemplar = ExemplarEngine()
        self.warp = warp

    def choose(self, avatar: Avatar) -> LipSyncEngine:
        from lipsync.mouthbank import load_bank

        # An enrolled mouth that does not belong on the template is never used (ExemplarEngine.fits).
        bank = load_bank(avatar.path)
        return self.exemplar if bank is not None and self.exemplar.fits(avatar, bank) else self.warp

    def frames(self, avatar, audio_16k, start, n_frames, track=None, live: bool = False, shapes=None):
        """`live`: frames for the stream encoder, which may be av.VideoFrames (ExemplarEngine.frames).
        `shapes`: the speech's mouths from `mouths`, worked out beforehand."""
        engine = self.choose(avatar)
        if engine is self.exemplar:
            return engine.frames(avatar, audio_16k, start, n_frames, track, live=live, shapes=shapes)
        return engine.frames(avatar, audio_16k, start, n_frames, track)

    def mouths(self, avatar, audio_16k, track):
        """The enrolled mouth's shapes for this speech (None where the warp engine speaks): the slow
        part of starting to speak (Whisper's encoder; for English, its words aligned), for a caller
        that must not wait for it on its frame loop (a room's publisher)."""
        engine = self.choose(avatar)
        return engine.bank(avatar).predict_shapes(audio_16k, track) if engine is self.exemplar else None

    def warm(self, avatar: Avatar) -> None:
        if self.choose(avatar) is self.exemplar:
            self.exemplar.bank(avatar)


def live_engine(settings) -> AutoEngine:
    """Rooms render in real time on CPU: the presenter's own mouth or the warp fallback, never a
    GPU network whatever the batch renders use."""
    return load_engine("auto", settings.models_dir, settings.lipsync_strength)


@lru_cache(maxsize=4)
def load_engine(name: str, models_dir: Path, strength: float = 1.0) -> LipSyncEngine:
    """The process-wide engine instance (models load once per worker process)."""
    if name == "warp":
        return WarpEngine(WarpOptions(strength=strength))
    if name == "auto":
        return AutoEngine(WarpEngine(WarpOptions(strength=strength)))
    if name == "exemplar":
        from lipsync.exemplar import ExemplarEngine

        return ExemplarEngine()
    if name == "musetalk":
        return MuseTalkLipSync(models_dir)
    raise ValueError(f"unknown lip-sync engine {name!r}; choose one of {', '.join(ENGINES)}")
