"""A prepared avatar, opened for serving: small arrays in memory, frames and masks on demand.

Frames are decoded from JPEG when asked for and only a handful are kept, so a room holds a few
MB per avatar instead of every decoded frame. Index `i` of the ping-pong cycle maps to forward
frame `i` for the first N entries and to `2N-1-i` after that.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

AVATAR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class AvatarNotFound(LookupError):
    pass


def avatar_dir(data_dir: Path, avatar_id: str) -> Path:
    if not AVATAR_ID.match(avatar_id or ""):
        raise AvatarNotFound(f"invalid avatar id {avatar_id!r}")
    return data_dir / "avatars" / avatar_id


class Avatar:
    def __init__(self, path: Path, cache_frames: int = 8) -> None:
        manifest_path = path / "avatar.json"
        if not manifest_path.is_file():
            raise AvatarNotFound(f"avatar {path.name!r} is not prepared")
        self.path = path
        self.manifest = json.loads(manifest_path.read_text())
        self.id = path.name
        self.n = int(self.manifest["frames"])
        self.cycle_length = 2 * self.n
        self.width, self.height = int(self.manifest["width"]), int(self.manifest["height"])
        self.fps = int(self.manifest.get("fps", 25))
        self.landmarks = np.load(path / "landmarks.npy")
        self.boxes = np.load(path / "boxes.npy")
        self._masks = np.load(path / "masks.npy", mmap_mode="r")
        latents = path / "latents.npy"
        self._latents = np.load(latents, mmap_mode="r") if latents.exists() else None
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = cache_frames

    @classmethod
    def open(cls, data_dir: Path, avatar_id: str) -> Avatar:
        return cls(avatar_dir(data_dir, avatar_id))

    def forward_index(self, cycle_index: int) -> int:
        i = cycle_index % self.cycle_length
        return i if i < self.n else self.cycle_length - 1 - i

    def frame(self, cycle_index: int) -> np.ndarray:
        """A writable copy of the full BGR frame at a cycle position."""
        i = self.forward_index(cycle_index)
        cached = self._frames.get(i)
        if cached is None:
            cached = cv2.imread(str(self.path / "frames" / f"{i:06d}.jpg"), cv2.IMREAD_COLOR)
            if cached is None:
                raise FileNotFoundError(f"avatar {self.id}: frame {i} missing")
            self._frames[i] = cached
            if len(self._frames) > self._cache_frames:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(i)
        return cached.copy()

    def landmarks_at(self, cycle_index: int) -> np.ndarray:
        return self.landmarks[self.forward_index(cycle_index)]

    def box_at(self, cycle_index: int) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.boxes[self.forward_index(cycle_index)])

    def mask_at(self, cycle_index: int) -> np.ndarray:
        return np.asarray(self._masks[self.forward_index(cycle_index)])

    def latents_at(self, cycle_index: int) -> np.ndarray | None:
        if self._latents is None:
            return None
        return np.asarray(self._latents[self.forward_index(cycle_index)])
