"""Template frames as the live encoder takes them (limited-range YUV 4:2:0), decoded straight from
the avatar's JPEGs, and the few pixels a lip-sync engine changes converted alone.

A speaking 720p room used to decode each template JPEG to BGR (3.5 ms of CPU), copy it, and
convert the whole frame back to YUV for x264 (2.7 ms), to change a mouth box of ~5% of the frame.
The prepared JPEGs already hold YCbCr 4:2:0 (full range): decoding them without colour conversion
and rescaling the levels to the encoder's range costs 2.8 ms, and only a window around the mouth
goes to BGR and back. The picture differs from the BGR route by rounding (mean 0.3 luma levels,
0.5 chroma levels, at most 4, on the bench720talk template).
"""

from __future__ import annotations

import logging
import threading
import time

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

# Full-range (JPEG) levels to the limited range H.264 streams here use (BT.601, as swscale's bgr24
# -> yuv420p conversion in core.live.to_video_frame produces).
_LUMA = np.round(16 + np.arange(256) * 219 / 255).astype(np.uint8)
_CHROMA = np.round(16 + np.arange(256) * 224 / 255).astype(np.uint8)

Window = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels, all even

# swscale threads for the per-frame conversions (the same pixels as any other count). Its default
# (0: one per core) starts a thread pool for every call, as each call makes a new SwsContext: on two
# cores a mouth window cost 0.37 ms of CPU and 1.3 ms of wall time instead of 0.23 / 0.24, and far
# more wall time when the machine is busy (each call waits for its threads to be scheduled). Rooms
# already run in parallel, a thread each.
SWS_THREADS = 1


def plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    """A writable [h, w] uint8 view of plane `i` (without the line padding)."""
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]


class FrameCache:
    """Decoded template frames (packed [h*3/2, w] yuv420p) shared by every room of an avatar in this
    process, within `budget` bytes: a hit costs a copy (0.2 ms at 720p) instead of a decode (2.9 ms).

    A room walks through every frame of its template, so a cache smaller than the template would
    only thrash under LRU: frames stay as first decoded until the budget is full (a 20 s 720p
    template needs 690 MB; with less, that share of its frames hits), and the frames of an avatar
    no room read for `idle_s` are dropped to make room for another."""

    def __init__(self, budget_bytes: int, idle_s: float = 60.0) -> None:
        self.budget, self.idle_s = budget_bytes, idle_s
        self.used = 0
        self._frames: dict[tuple, dict[int, np.ndarray]] = {}
        self._read_at: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, i: int) -> np.ndarray | None:
        self._read_at[key] = time.monotonic()
        return self._frames.get(key, {}).get(i)

    def holds(self, key: tuple) -> bool:
        return bool(self._frames.get(key))

    def put(self, key: tuple, i: int, packed: np.ndarray) -> bool:
        with self._lock:
            if i in self._frames.get(key, {}):
                return True
            if self.used + packed.nbytes > self.budget:
                self._drop_idle(key)
            if self.used + packed.nbytes > self.budget:
                return False
            self._frames.setdefault(key, {})[i] = packed
            self.used += packed.nbytes
            return True

    def _drop_idle(self, keep: tuple) -> None:
        now = time.monotonic()
        for key in [k for k in self._frames if k != keep and now - self._read_at.get(k, 0.0) > self.idle_s]:
            self.used -= sum(f.nbytes for f in self._frames.pop(key).values())
            log.info("frame cache: dropped %s's frames (no room read them for %.0f s)", key[0], self.idle_s)


_shared = FrameCache(0)


def configure_cache(budget_mb: int) -> FrameCache:
    """The process-wide cache TemplateYuv uses by default (stream workers size it from settings;
    elsewhere it holds nothing)."""
    global _shared
    _shared = FrameCache(budget_mb * 1024 * 1024)
    return _shared


_warming: set[tuple] = set()
_warming_lock = threading.Lock()


def warm_cache(avatar) -> None:
    """Decode the avatar's template frames into the shared cache on a thread of their own (unless
    they are there or being decoded), so its speaking rooms hit from their first words on instead of
    after a whole cycle."""
    key = _key(avatar)
    with _warming_lock:
        if not _shared.budget or key in _warming or _shared.holds(key):
            return
        _warming.add(key)
    threading.Thread(target=_fill, args=(avatar, _shared), name=f"frames-{avatar.id}", daemon=True).start()


def _fill(avatar, cache: FrameCache) -> None:
    started, decoder = time.monotonic(), TemplateYuv(cache)
    try:
        for i in range(avatar.n):
            if cache.used + avatar.width * avatar.height * 3 // 2 > cache.budget or decoder.frame(avatar, i) is None:
                break
    except Exception:
        log.exception("avatar %s: template frames not cached; rooms decode them", avatar.id)
    finally:
        with _warming_lock:
            _warming.discard(_key(avatar))
    log.info("avatar %s: template frames cached in %.1f s (%.0f MB in the cache)", avatar.id,
             time.monotonic() - started, cache.used / 2**20)


def _key(avatar) -> tuple:
    # The manifest's cache key changes when the avatar is prepared again under the same id.
    return str(avatar.path), avatar.manifest.get("cache_key", "")


class TemplateYuv:
    """Decodes an avatar's template frames to limited-range yuv420p. One per thread (the decoder
    keeps state); None for a frame not stored as 4:2:0 with even sides (callers take the BGR route).
    Every call returns a frame of its own (callers draw on it)."""

    def __init__(self, cache: FrameCache | None = None) -> None:
        self._decoder = av.CodecContext.create("mjpeg", "r")
        self.cache = cache if cache is not None else _shared

    def frame(self, avatar, cycle_index: int) -> av.VideoFrame | None:
        i, key = avatar.forward_index(cycle_index), _key(avatar)
        packed = self.cache.get(key, i)
        if packed is not None:
            return _unpack(packed)
        out = self._decode(avatar.path / "frames" / f"{i:06d}.jpg")
        if out is not None and self.cache.budget:
            self.cache.put(key, i, np.concatenate([plane(out, p).ravel() for p in range(3)]).reshape(-1, out.width))
        return out

    def _decode(self, path) -> av.VideoFrame | None:
        decoded = self._decoder.decode(av.Packet(path.read_bytes()))
        if not decoded:
            return None
        src = decoded[0]
        if src.format.name not in ("yuvj420p", "yuv420p") or src.width % 2 or src.height % 2:
            return None
        full = src.format.name == "yuvj420p"
        out = av.VideoFrame(src.width, src.height, "yuv420p")
        for i, lut in enumerate((_LUMA, _CHROMA, _CHROMA)):
            dst = plane(out, i)
            if full:
                cv2.LUT(plane(src, i), lut, dst=dst)
            else:
                dst[:] = plane(src, i)
        return out


def _unpack(packed: np.ndarray) -> av.VideoFrame:
    rows, w = packed.shape
    h = rows * 2 // 3
    out = av.VideoFrame(w, h, "yuv420p")
    flat = packed.reshape(-1)
    plane(out, 0)[:] = flat[:w * h].reshape(h, w)
    quarter = (w // 2) * (h // 2)
    plane(out, 1)[:] = flat[w * h:w * h + quarter].reshape(h // 2, w // 2)
    plane(out, 2)[:] = flat[w * h + quarter:].reshape(h // 2, w // 2)
    return out


def window(box, width: int, height: int, margin: int = 8) -> Window:
    """`box` grown by `margin` px and out to even coordinates (4:2:0 chroma covers 2x2 pixels), inside
    the frame: the converted pixels near the window's edge see no neighbour beyond it, so the box
    itself is kept that far from the edge."""
    x1, y1, x2, y2 = box
    x1, y1 = max(0, x1 - margin) & ~1, max(0, y1 - margin) & ~1
    x2, y2 = min(width, (x2 + margin + 1) & ~1), min(height, (y2 + margin + 1) & ~1)
    return x1, y1, x2, y2


def read_bgr(frame: av.VideoFrame, win: Window) -> np.ndarray:
    """The window's pixels as BGR (swscale, the conversion the stream's decoders make)."""
    x1, y1, x2, y2 = win
    crop = av.VideoFrame(x2 - x1, y2 - y1, "yuv420p")
    plane(crop, 0)[:] = plane(frame, 0)[y1:y2, x1:x2]
    for i in (1, 2):
        plane(crop, i)[:] = plane(frame, i)[y1 // 2:y2 // 2, x1 // 2:x2 // 2]
    return crop.reformat(format="bgr24", threads=SWS_THREADS).to_ndarray()


def write_bgr(frame: av.VideoFrame, win: Window, bgr: np.ndarray, changed: np.ndarray) -> None:
    """Put the window's BGR pixels back where `changed` ([h, w] bool or 0/1 uint8) says they were
    drawn: luma per pixel, chroma per 2x2 block with any pixel drawn. The rest of the window keeps
    its decoded values (a round trip through BGR would move them by a level or two)."""
    changed = changed.view(np.uint8)
    # Only the drawn pixels' box (out to even sides) is converted: swscale converts each pixel, and
    # each 2x2 block's chroma, from those pixels alone, so a smaller window gives the same values.
    cx, cy, cw, ch = cv2.boundingRect(changed)
    if not cw:
        return
    cx1, cy1, cx2, cy2 = cx & ~1, cy & ~1, min(bgr.shape[1], (cx + cw + 1) & ~1), min(bgr.shape[0], (cy + ch + 1) & ~1)
    bgr, changed = bgr[cy1:cy2, cx1:cx2], changed[cy1:cy2, cx1:cx2]
    x1, y1 = win[0] + cx1, win[1] + cy1
    x2, y2 = x1 + cx2 - cx1, y1 + cy2 - cy1
    yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24").reformat(format="yuv420p",
                                                                                          threads=SWS_THREADS)
    # cv2's masked copy and dilate: numpy's copyto(where=) cost up to 30 times as much.
    changed = np.ascontiguousarray(changed)
    cv2.copyTo(plane(yuv, 0), changed, plane(frame, 0)[y1:y2, x1:x2])
    # A 2x2 block is drawn where any of its pixels is: the largest over each block's pixels.
    block = np.ascontiguousarray(cv2.dilate(changed, _BLOCK, anchor=(0, 0))[::2, ::2])
    for i in (1, 2):
        cv2.copyTo(plane(yuv, i), block, plane(frame, i)[y1 // 2:y2 // 2, x1 // 2:x2 // 2])


_BLOCK = np.ones((2, 2), np.uint8)
