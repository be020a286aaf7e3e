"""The avatar's idle cycle encoded once as H.264 packets, resent by idle rooms without re-encoding.

Cached next to the avatar as ``idle-<digest>.pkts`` (digest of the encoder options and frame
size): per frame a 4-byte length, a keyframe flag byte, then the packet bytes. Keyframes fall on
every GOP boundary of the cycle, where a publisher may switch from live encoding to the loop.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass

import numpy as np

from avatars.store import Avatar
from core.live import new_video_encoder, options_digest, to_video_frame
from core.settings import Settings

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<IB")


@dataclass(frozen=True)
class IdleLoop:
    packets: list[bytes]
    keyframes: np.ndarray  # bool per cycle position

    def __len__(self) -> int:
        return len(self.packets)


def _idle_frames(avatar: Avatar):
    """The cycle as a silent room shows it: a template that talks is shown with the presenter's
    own closed mouth when the avatar is enrolled (a moving mouth without sound looks broken)."""
    from lipsync.exemplar import rest_renderer

    render = rest_renderer(avatar)
    for i in range(avatar.cycle_length):
        yield render(i) if render is not None else avatar.frame(i)


def _encode(avatar: Avatar, settings: Settings) -> list[tuple[bytes, bool]]:
    enc = new_video_encoder(settings, avatar.width, avatar.height)
    out: list[tuple[bytes, bool]] = []
    for i, frame in enumerate(_idle_frames(avatar)):
        for packet in enc.encode(to_video_frame(frame, i, keyframe=i % 50 == 0)):
            out.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in enc.encode(None):
        out.append((bytes(packet), bool(packet.is_keyframe)))
    if len(out) != avatar.cycle_length:
        raise RuntimeError(f"idle loop: {len(out)} packets for {avatar.cycle_length} frames")
    return out


def load_idle_loop(avatar: Avatar, settings: Settings) -> IdleLoop:
    from lipsync.mouthbank import enrollment

    # The enrollment takes part in the name: enrolling later re-encodes the loop with the closed mouth.
    enrolled = (enrollment(avatar.path) or {}).get("sample_sha256", "")[:8]
    path = avatar.path / f"idle-{options_digest(settings, avatar.width, avatar.height)}{enrolled}.pkts"
    if not path.exists():
        log.info("encoding idle loop of avatar %s (%d frames)", avatar.id, avatar.cycle_length)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with tmp.open("wb") as fh:
            for data, key in _encode(avatar, settings):
                fh.write(_HEADER.pack(len(data), key))
                fh.write(data)
        tmp.replace(path)
    blob = path.read_bytes()
    packets, keys, pos = [], [], 0
    while pos < len(blob):
        size, key = _HEADER.unpack_from(blob, pos)
        pos += _HEADER.size
        packets.append(blob[pos:pos + size])
        keys.append(bool(key))
        pos += size
    return IdleLoop(packets, np.array(keys))
