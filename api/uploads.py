"""Receiving client files: bounded size, probed before acceptance, stored under results/uploads/."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from api.services.files import check_audio, claim_file, owned_ref
from core.errors import DomainError, Invalid, Missing, TooLarge
from core.limits import check_disk
from core.media import MAX_IMAGE_PIXELS, ImageTooLarge, MediaError, MediaInfo, MediaRefused, probe
from core.settings import Settings

log = logging.getLogger(__name__)

_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")
AUDIO_EXTENSIONS = {"wav", "mp3", "m4a", "aac", "ogg", "oga", "opus", "flac", "webm", "mp4", "mov", "mkv"}
VISUAL_EXTENSIONS = {"mp4", "mov", "webm", "mkv", "avi", "png", "jpg", "jpeg", "webp", "bmp"}
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe")


async def _receive(settings: Settings, upload: UploadFile, allowed_ext: set[str], max_bytes: int) -> Path:
    check_disk(settings)  # 507 before a byte is written when the data disk is nearly full
    match = _EXT.search(upload.filename or "")
    ext = match.group(1).lower() if match else "bin"
    if ext not in allowed_ext:
        ext = "bin"  # the stored name is ours anyway; probing decides what the content is
    path = settings.kind_dir("uploads") / f".{uuid.uuid4().hex}.{ext}.part"
    size = 0
    try:
        with path.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge("upload_too_large", f"upload larger than {max_bytes} bytes")
                out.write(chunk)
        if size == 0:
            raise Missing("empty_upload", "the uploaded file is empty")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _accept(tmp: Path) -> Path:
    final = tmp.with_name(tmp.name[1:].removesuffix(".part"))
    tmp.replace(final)
    return final


async def _probe(tmp: Path, what: str) -> MediaInfo:
    try:
        return await run_in_threadpool(probe, tmp)
    except ImageTooLarge as exc:
        tmp.unlink(missing_ok=True)
        raise Invalid("image_too_large", str(exc), width=exc.width, height=exc.height) from exc
    except MediaError as exc:
        tmp.unlink(missing_ok=True)
        log.info("upload refused: %s", exc)
        # Policy refusals say why; ffprobe's own messages name server paths and stay in the log.
        reason = f": {exc}" if isinstance(exc, MediaRefused) else ""
        raise Invalid(f"undecodable_{what}", f"not a decodable {what} file{reason}") from exc


async def save_audio_upload(settings: Settings, upload: UploadFile) -> tuple[Path, MediaInfo]:
    tmp = await _receive(settings, upload, AUDIO_EXTENSIONS, settings.max_upload_bytes)
    info = await _probe(tmp, "audio")
    try:
        check_audio(info, settings.max_audio_s)
    except Invalid:
        tmp.unlink(missing_ok=True)
        raise
    return _accept(tmp), info


async def save_visual_upload(settings: Settings, upload: UploadFile) -> tuple[Path, MediaInfo]:
    """A template video or a portrait image for avatar preparation."""
    tmp = await _receive(settings, upload, VISUAL_EXTENSIONS, settings.max_avatar_upload_bytes)
    info = await _probe(tmp, "video")
    if not info.has_video:
        tmp.unlink(missing_ok=True)
        raise Invalid("undecodable_video", "the file has no video stream or image")
    if info.format_name not in IMAGE_FORMATS and info.duration_s > settings.max_avatar_s:
        tmp.unlink(missing_ok=True)
        raise Invalid("video_too_long",
                       f"video is {info.duration_s:.1f} s; the limit is {settings.max_avatar_s:.0f} s")
    try:
        check_pixels(info)
    except DomainError:
        tmp.unlink(missing_ok=True)
        raise
    return _accept(tmp), info


def check_pixels(info: MediaInfo) -> None:
    """Refused from the header: decoding is what a small, highly compressed picture would cost."""
    if info.width * info.height > MAX_IMAGE_PIXELS:
        raise Invalid("image_too_large", f"the picture is {info.width}x{info.height} pixels; the limit is "
                       f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels", width=info.width, height=info.height)


async def save_sample_upload(settings: Settings, upload: UploadFile) -> tuple[Path, MediaInfo]:
    """A talking clip of the presenter with their own speech, for enrollment."""
    tmp = await _receive(settings, upload, VISUAL_EXTENSIONS - {"png", "jpg", "jpeg", "webp", "bmp"},
                         settings.max_avatar_upload_bytes)
    info = await _probe(tmp, "video")
    try:
        check_sample(info, settings)
    except DomainError:
        tmp.unlink(missing_ok=True)
        raise
    return _accept(tmp), info


def check_sample(info: MediaInfo, settings: Settings) -> None:
    if not info.has_video or info.format_name in IMAGE_FORMATS:
        raise Invalid("sample_undecodable", "the speech sample must be a video of the presenter talking")
    if not info.has_audio:
        raise Invalid("sample_no_audio", "the speech sample has no audio track; it must carry the presenter's own speech")
    check_pixels(info)
    if not settings.min_sample_s <= info.duration_s <= settings.max_sample_s:
        raise Invalid("sample_duration", f"the speech sample is {info.duration_s:.1f} s; it must last "
                       f"{settings.min_sample_s:.0f} s to {settings.max_sample_s:.0f} s")


async def save_owned(settings: Settings, upload: UploadFile, saver, *, redis, caller) -> tuple[str, Path, MediaInfo]:
    """An upload saved by `saver` (checked as it says) and recorded as the caller's: (reference, path, info)."""
    path, info = await saver(settings, upload)
    return await run_in_threadpool(claim_file, settings, redis, caller, path), path, info


async def upload_or_source(settings: Settings, upload: UploadFile | None, source: str | None, saver, *,
                           redis, caller) -> str:
    """The `<kind>/<name>` reference of an uploaded file (saved by `saver`, recorded as the caller's)
    or of an owned `source` this caller may use."""
    if upload is not None and upload.filename:
        return (await save_owned(settings, upload, saver, redis=redis, caller=caller))[0]
    if source:
        return await run_in_threadpool(lambda: owned_ref(settings, source, redis=redis, caller=caller))
    raise Missing("missing_parameter", "give an uploaded `file` or a `source` reference")


async def save_video_upload(settings: Settings, upload: UploadFile, max_s: float) -> tuple[Path, MediaInfo]:
    """A recorded video (e.g. a candidate's answer); its audio is optional."""
    tmp = await _receive(settings, upload, VISUAL_EXTENSIONS - {"png", "jpg", "jpeg", "webp", "bmp"},
                         settings.max_avatar_upload_bytes)
    info = await _probe(tmp, "video")
    try:
        if not info.has_video or info.still_image:
            raise Invalid("no_frames", "the file has no video frames")
        check_pixels(info)
        if info.duration_s > max_s:
            raise Invalid("video_too_long", f"video is {info.duration_s:.1f} s; the limit is {max_s:.0f} s")
    except DomainError:
        tmp.unlink(missing_ok=True)
        raise
    return _accept(tmp), info
