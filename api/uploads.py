"""Receiving client audio: bounded size, decodable audio only, stored under results/uploads/."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from core.media import MediaError, MediaInfo, probe
from core.settings import Settings

_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")
AUDIO_EXTENSIONS = {"wav", "mp3", "m4a", "aac", "ogg", "oga", "opus", "flac", "webm", "mp4", "mov", "mkv"}


async def save_audio_upload(settings: Settings, upload: UploadFile) -> tuple[Path, MediaInfo]:
    match = _EXT.search(upload.filename or "")
    ext = match.group(1).lower() if match else "bin"
    if ext not in AUDIO_EXTENSIONS:
        ext = "bin"  # the name is ours anyway; ffprobe decides whether it is audio
    path = settings.kind_dir("uploads") / f"{uuid.uuid4().hex}.{ext}"
    tmp = path.with_name(f".{path.name}.part")
    size = 0
    try:
        with tmp.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(413, "upload_too_large",
                                   f"upload larger than {settings.max_upload_bytes} bytes")
                out.write(chunk)
        if size == 0:
            raise ApiError(400, "empty_upload", "the uploaded file is empty")
        try:
            info = await run_in_threadpool(probe, tmp)
        except MediaError as exc:
            raise ApiError(422, "undecodable_audio", "not a decodable audio or video file") from exc
        if not info.has_audio:
            raise ApiError(422, "undecodable_audio", "the file has no audio track")
        if info.duration_s > settings.max_audio_s:
            raise ApiError(422, "audio_too_long",
                           f"audio is {info.duration_s:.1f} s; the limit is {settings.max_audio_s:.0f} s")
        tmp.replace(path)
        return path, info
    finally:
        tmp.unlink(missing_ok=True)
