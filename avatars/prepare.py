"""Avatar preparation: a template video or a portrait -> a cached, reusable avatar directory.

Layout of ``results/avatars/<id>/`` (the forward clip is stored once; the ping-pong cycle,
clip then its reverse, is an index mapping, see avatars/store.py):

    avatar.json      manifest: source hash, every parameter, code/model versions, sizes
    frames/NNNNNN.jpg  full frames, JPEG (compact; decoded on demand)
    landmarks.npy    [N,468,2] float32 face mesh per frame (smoothed in time)
    boxes.npy        [N,4] int32 face boxes by MuseTalk's convention
    masks.npy        [N,256,256] uint8 lower-face blend masks in box coordinates
    latents.npy      [N,8,32,32] float32 MuseTalk latents (only when its weights are present)
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from avatars.face import FaceDetector, FaceMesher
from avatars.geometry import lower_face_mask, musetalk_box
from avatars.idle import idle_frames
from core.media import ImageTooLarge, MediaError, iter_video_frames, probe, video_size

log = logging.getLogger(__name__)

PREP_VERSION = "prep-v1"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class AvatarError(ValueError):
    """The input cannot become an avatar; `code` and `details` go to the client."""

    def __init__(self, code: str, message: str, **details) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class PrepareOptions:
    bbox_shift: int = 0  # MuseTalk v1.5 forces 0
    extra_margin: int = 10  # px below the chin (v1.5)
    fps: int = 25
    max_side: int = 1280  # larger inputs are scaled down
    max_duration_s: float = 60.0
    max_missing_share: float = 0.05  # frames without a face tolerated (and interpolated)
    min_face_px: int = 64
    idle_seconds: float = 4.0  # length of the generated loop for image inputs
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if not -50 <= self.bbox_shift <= 50:
            raise ValueError("bbox_shift must be within -50..50")
        if not 0 <= self.extra_margin <= 60:
            raise ValueError("extra_margin must be within 0..60")
        if self.fps != 25:
            raise ValueError("avatars are prepared at 25 fps")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def versions(with_latents: bool) -> dict:
    from avatars.face import import_mediapipe

    mediapipe = import_mediapipe()

    return {"prep": PREP_VERSION, "mediapipe": mediapipe.__version__, "opencv": cv2.__version__,
            "musetalk_latents": with_latents}


def cache_key(source_sha: str, options: PrepareOptions, with_latents: bool) -> str:
    blob = json.dumps([source_sha, asdict(options), versions(with_latents)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_manifest(avatar_dir: Path) -> dict | None:
    path = avatar_dir / "avatar.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _scaled_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(w, h))
    # Even sizes: H.264 yuv420p needs them.
    return max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)


def _read_image(path: Path, max_side: int) -> np.ndarray | None:
    import warnings

    from PIL import Image, UnidentifiedImageError

    from core.media import MAX_IMAGE_PIXELS

    # The size comes from the header, before any decoding: a 10000x10000 PNG is a few hundred KB
    # and 300 MB decoded. Every accepted picture format (PNG, JPEG, WebP, BMP) has a header PIL reads.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            with Image.open(path) as header:
                w, h = header.size
    except Image.DecompressionBombError as exc:
        raise AvatarError("image_too_large", f"the image is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError):
        return None
    if w * h > MAX_IMAGE_PIXELS:
        raise AvatarError("image_too_large", f"the image is {w}x{h} pixels; the limit is "
                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels", width=w, height=h)
    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return None
    w, h = _scaled_size(image.shape[1], image.shape[0], max_side)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if w < image.shape[1] else cv2.INTER_CUBIC)


def _open_video(path: Path, options: PrepareOptions):
    """(frame iterator, expected frame count) for a video input, after checking its limits."""
    try:
        info = probe(path)
    except ImageTooLarge as exc:
        raise AvatarError("image_too_large", str(exc), width=exc.width, height=exc.height) from exc
    except MediaError as exc:
        raise AvatarError("undecodable", "the file is not a decodable video or image") from exc
    if not info.has_video:
        raise AvatarError("undecodable", "the file has no video stream")
    if info.duration_s > options.max_duration_s:
        raise AvatarError("too_long", f"video is {info.duration_s:.1f} s; the limit is {options.max_duration_s:.0f} s")
    from core.media import MAX_IMAGE_PIXELS

    width, height = video_size(path)
    if width * height > MAX_IMAGE_PIXELS:
        raise AvatarError("image_too_large", f"the picture is {width}x{height} pixels; the limit is "
                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels", width=width, height=height)
    w, h = _scaled_size(width, height, options.max_side)
    return iter_video_frames(path, w, h, options.fps), max(1, round(info.duration_s * options.fps))


class _FaceChecks:
    """Validation on a sample of frames while they stream past (no second decode)."""

    def __init__(self, expected: int, options: PrepareOptions) -> None:
        self.every = max(1, expected // 8)
        self.options = options
        self.detector = FaceDetector()
        self.counts: list[tuple[int, object]] = []

    def see(self, i: int, frame: np.ndarray) -> None:
        if i % self.every == 0 and len(self.counts) < 9:
            self.counts.append((i, self.detector.count(frame)))

    def verdict(self) -> None:
        counts = [c for _, c in self.counts]
        if not counts or all(c.faces == 0 for c in counts):
            raise AvatarError("no_face", "no face found in the input")
        competing = [i for i, c in self.counts if c.competing]
        if competing:
            raise AvatarError("several_faces", "several faces of similar size; use a template with one person",
                              frames=competing)
        largest = max(c.largest_width for c in counts)
        if largest < self.options.min_face_px:
            raise AvatarError("face_too_small",
                              f"the face is {largest:.0f} px wide; at least {self.options.min_face_px} px is needed")

    def close(self) -> None:
        self.detector.close()


def _fill_and_smooth(found: list, options: PrepareOptions) -> np.ndarray:
    missing = [i for i, lm in enumerate(found) if lm is None]
    if len(missing) == len(found):
        raise AvatarError("no_face", "no face found in the input")
    if len(missing) > options.max_missing_share * len(found):
        raise AvatarError("frames_without_face",
                          f"{len(missing)} of {len(found)} frames have no detectable face",
                          frames=missing[:200])
    valid = [i for i, lm in enumerate(found) if lm is not None]
    flat = np.stack([found[i] for i in valid]).reshape(len(valid), -1)
    # Fill the few gaps by interpolating each coordinate between the nearest good frames.
    idx = np.arange(len(found))
    full = np.stack([np.interp(idx, valid, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    landmarks = full.reshape(len(found), -1, 2).astype(np.float32)
    if len(found) > 4:
        # A light temporal filter removes detector jitter but keeps the real idle motion.
        kernel = np.array([1, 4, 6, 4, 1], np.float32) / 16
        padded = np.pad(landmarks, ((2, 2), (0, 0), (0, 0)), mode="edge")
        landmarks = sum(kernel[k] * padded[k:k + len(found)] for k in range(5)).astype(np.float32)
    return landmarks


def _frame_source(source: Path, options: PrepareOptions):
    """(kind, frame iterator, expected count)."""
    image = _read_image(source, options.max_side) if source.suffix.lower() in IMAGE_EXTS | {".bin"} else None
    if image is None:
        frames, expected = _open_video(source, options)
        return "video", frames, expected
    base = FaceMesher(video=False)
    try:
        still_lm = base.landmarks(image)
    finally:
        base.close()
    if still_lm is None:
        raise AvatarError("no_face", "no face found in the input")
    expected = int(options.idle_seconds * options.fps)
    return "image", idle_frames(image, still_lm, expected, options.fps), expected


def _stream_frames(frames, expected: int, tmp: Path, options: PrepareOptions, progress) -> list:
    """Mesh every frame and write it as JPEG; returns raw landmarks (None where no face).

    Frames stream through: meshed here, JPEG-encoded on a second thread (cv2 releases the GIL),
    then dropped, so memory stays flat whatever the clip length."""
    params = [int(cv2.IMWRITE_JPEG_QUALITY), options.jpeg_quality]

    def write(i: int, frame: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", frame, params)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        buf.tofile(str(tmp / "frames" / f"{i:06d}.jpg"))

    checks = _FaceChecks(expected, options)
    mesher = FaceMesher(video=True)
    found: list[np.ndarray | None] = []
    pending = []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            for i, frame in enumerate(frames):
                checks.see(i, frame)
                found.append(mesher.landmarks(frame))
                pending.append(pool.submit(write, i, frame))
                if len(pending) > 8:
                    pending.pop(0).result()
                if i % 25 == 0:
                    progress(0.8 * min(1.0, i / expected))
            for fut in pending:
                fut.result()
    except MediaError as exc:
        raise AvatarError("undecodable", "the video could not be decoded") from exc
    finally:
        mesher.close()
        checks.close()
    checks.verdict()
    return found


def prepare(source: Path, out_dir: Path, options: PrepareOptions = PrepareOptions(),
            progress: Callable[[float], None] = lambda p: None, latent_encoder=None) -> dict:
    """Build (or reuse) the avatar at `out_dir` from `source`; returns its manifest.

    `latent_encoder(frames_dir, boxes) -> [N,8,32,32]` is given when MuseTalk weights are present."""
    started = time.perf_counter()
    source_sha = file_sha256(source)
    key = cache_key(source_sha, options, latent_encoder is not None)
    existing = load_manifest(out_dir)
    if existing and existing.get("cache_key") == key:
        return {**existing, "reused": True}
    kind, frames, expected = _frame_source(source, options)
    tmp = out_dir.with_name(f".{out_dir.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "frames").mkdir(parents=True)
    try:
        landmarks = _fill_and_smooth(_stream_frames(frames, expected, tmp, options, progress), options)
        n = len(landmarks)
        h, w = cv2.imread(str(tmp / "frames" / "000000.jpg")).shape[:2]
        boxes = np.array([musetalk_box(lm, (h, w), options.bbox_shift, options.extra_margin) for lm in landmarks],
                         np.int32)
        masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, 256, 256))
        for i, (lm, box) in enumerate(zip(landmarks, boxes)):
            masks[i] = lower_face_mask(lm, tuple(box))
        masks.flush()
        del masks
        np.save(tmp / "landmarks.npy", landmarks)
        np.save(tmp / "boxes.npy", boxes)
        if latent_encoder is not None:
            np.save(tmp / "latents.npy", latent_encoder(tmp / "frames", boxes))
        progress(0.95)
        manifest = {
            "id": out_dir.name, "kind": kind, "source_sha256": source_sha, "cache_key": key,
            "options": asdict(options), "versions": versions(latent_encoder is not None),
            "frames": n, "cycle_length": 2 * n, "cycle": "pingpong", "width": w, "height": h,
            "fps": options.fps, "has_latents": latent_encoder is not None,
            "prepare_s": round(time.perf_counter() - started, 3), "created_at": time.time(),
        }
        (tmp / "avatar.json").write_text(json.dumps(manifest, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return {**manifest, "reused": False}
