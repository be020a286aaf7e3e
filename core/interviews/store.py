"""Interview records and stock clips in Redis, and the render chain of each clip.

A clip is rendered by two jobs: TTS (``tts/<name>.wav``) then lip-sync with the room's avatar
(``lipsync/<name>.mp4``), the second depending on the first. Files keep the legacy names, so
``GET /tests/<zbjname>_<i>.mp4`` serves question i. A record is written once, when the interview
is created; every state shown later is read from the jobs and the files, so nothing has to be
kept in step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from redis import Redis, WatchError
from rq.job import JobStatus

from core import keys
from core.jobs import GAVE_UP, Kind, enqueue, fetch_job, new_job_id
from core.limits import check_disk, check_queue
from core.rooms import Room
from core.settings import Settings

log = logging.getLogger(__name__)

# A stock entry whose jobs cannot be found yet is being enqueued by whoever claimed it.
CLAIM_GRACE_S = 30.0


class ClipStatus(str, Enum):
    """Where a clip's render stands (and an interview's: failed if any clip is failed or missing,
    ready once all are, else rendering)."""

    READY = "ready"
    RENDERING = "rendering"
    FAILED = "failed"
    MISSING = "missing"  # no job and no file: expired, lost with Redis, or deleted


@dataclass(frozen=True)
class ClipState:
    status: ClipStatus
    progress: float
    error: str | None = None


@dataclass(frozen=True)
class Clip:
    """One rendered line: an interview's question (`index`) or a stock clip (96..99, `renders`,
    `claimed_at`). Its two jobs render `audio` then `video`; its state is read from them and the file."""

    name: str
    text: str
    audio: str  # tts/<name>.wav
    video: str  # lipsync/<name>.mp4
    tts_job_id: str | None = None
    lipsync_job_id: str | None = None
    index: int | None = None  # a question's place in its interview
    avatar_id: str | None = None  # stock clips: whose avatar, in which language, how often rendered, by whom
    language: str | None = None
    renders: int = 0
    claimed_at: float = 0.0
    owner: str | None = None
    key: str | None = None  # a stock clip's Redis key, as listed (never stored in the entry)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "key"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], key: str | None = None) -> Clip:
        return cls(**{k: v for k, v in data.items() if k in _CLIP_FIELDS}, key=key)


_CLIP_FIELDS = {f.name for f in fields(Clip)} - {"key"}


@dataclass(frozen=True)
class Interview:
    """An interview's record, written once when it is created (serialised by InterviewStore alone)."""

    id: str
    room_id: str
    zbjname: str
    username: str
    job: str
    language: str
    count: int
    avatar_id: str
    generator: dict[str, Any]  # which generator answered, and why a fallback (Questions.record())
    questions: list[Clip] = field(default_factory=list)
    created_at: float = 0.0
    owner: str | None = None

    def dumps(self) -> str:
        data = {**asdict(self), "questions": [q.to_dict() for q in self.questions]}
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def loads(cls, raw: bytes | str) -> Interview:
        data = json.loads(raw)
        questions = [Clip.from_dict(q) for q in data.pop("questions", [])]
        return cls(**{k: v for k, v in data.items() if k in _INTERVIEW_FIELDS}, questions=questions)


_INTERVIEW_FIELDS = {f.name for f in fields(Interview)} - {"questions"}


def clip_paths(settings: Settings, name: str) -> tuple[Path, Path]:
    return settings.data_dir / "tts" / f"{name}.wav", settings.data_dir / "lipsync" / f"{name}.mp4"


def question_name(zbjname: str, index: int) -> str:
    return f"{zbjname}_{index}"


def enqueue_clip(settings: Settings, redis: Redis, name: str, text: str, language: str, avatar_id: str,
                 room: str | None, tts_job_id: str | None = None, lipsync_job_id: str | None = None,
                 owner: str | None = None) -> Clip:
    """Enqueue TTS then lip-sync for one clip; returns it with its job ids and file references.
    `owner` owns both jobs and both files."""
    tts_job_id = tts_job_id or new_job_id()
    lipsync_job_id = lipsync_job_id or new_job_id()
    # Admitted as a whole by the caller (check_interview_admission): no half-enqueued chains.
    enqueue(settings, redis, Kind.tts, {"text": text, "output_name": name, "voice": None, "language": language},
            tts_job_id, admit=False, owner=owner)
    # `room` keys the avatar's cycle position, so consecutive clips of a room continue each other.
    enqueue(settings, redis, Kind.lipsync, {"avatar_id": avatar_id, "output_name": name, "audio": f"tts/{name}.wav",
                                            "engine": None, "room": room}, lipsync_job_id, [tts_job_id],
            admit=False, owner=owner)
    return Clip(name=name, text=text, tts_job_id=tts_job_id, lipsync_job_id=lipsync_job_id, audio=f"tts/{name}.wav",
                video=f"lipsync/{name}.mp4")


def admit_chains(settings: Settings, redis: Redis) -> None:
    """New interview work is admitted whole or not at all (core.limits.Refused): disk, then both queues."""
    check_disk(settings)
    check_queue(settings, redis, Kind.tts.value)
    check_queue(settings, redis, Kind.lipsync.value)


def clip_state(settings: Settings, redis: Redis, clip: Clip) -> ClipState:
    """Where a clip's render stands: the finished file decides, then the two jobs."""
    if clip_paths(settings, clip.name)[1].is_file():
        return ClipState(ClipStatus.READY, 1.0)
    tts = fetch_job(redis, clip.tts_job_id) if clip.tts_job_id else None
    video = fetch_job(redis, clip.lipsync_job_id) if clip.lipsync_job_id else None
    for job, what in ((tts, "speech synthesis"), (video, "lip-sync rendering")):
        if job is not None and job.status in GAVE_UP:
            reason = (job.error or {}).get("message") or job.status.value
            return ClipState(ClipStatus.FAILED, 0.0, f"{what} failed: {reason}")
    if video is None or (video.status == JobStatus.FINISHED):
        # No job (expired, lost with Redis) or a finished job whose file is gone.
        return ClipState(ClipStatus.MISSING, 0.0, "the clip's render is gone; it was never finished or was deleted")
    progress = 0.2 * (tts.progress if tts is not None else 1.0) + 0.8 * video.progress
    return ClipState(ClipStatus.RENDERING, round(progress, 3))


class InterviewStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.r = redis
        self.settings = settings

    def create(self, room: Room, job: str, language: str, count: int, questions, avatar_id: str,
               owner: str | None = None) -> Interview:
        """Record an interview for an open room and enqueue the render chain of every question;
        `owner` (the creating key's hash) owns the record, the jobs and the clips."""
        interview_id = uuid.uuid4().hex
        items = []
        for i, text in enumerate(questions.questions):
            clip = enqueue_clip(self.settings, self.r, question_name(room.zbjname, i), text, language, avatar_id,
                                room.id, owner=owner)
            items.append(replace(clip, index=i))
        record = Interview(id=interview_id, room_id=room.id, zbjname=room.zbjname, username=room.username, job=job,
                           language=language, count=count, avatar_id=avatar_id, generator=questions.record(),
                           questions=items, created_at=time.time(), owner=owner)
        ttl = self.settings.result_ttl_s  # as long as the jobs' results
        with self.r.pipeline() as p:
            p.set(keys.interview(interview_id), record.dumps(), ex=ttl)
            p.set(keys.interview_of_room(room.id), interview_id, ex=ttl)
            p.execute()
        log.info("interview %s in room %s: %d questions (%s)", interview_id, room.zbjname, count,
                 questions.generator)
        return record

    def get(self, interview_id: str) -> Interview | None:
        raw = self.r.get(keys.interview(interview_id)) if len(interview_id) == 32 else None
        return Interview.loads(raw) if raw else None

    def for_room(self, room_id: str) -> Interview | None:
        interview_id = self.r.get(keys.interview_of_room(room_id))
        return self.get(interview_id.decode()) if interview_id else None

    # ---- stock clips ----
    def stock_text(self, language: str, stock_id: int) -> str:
        texts = self.settings.interview_stock_texts.get(language) or {}
        text = (texts.get(str(stock_id)) or "").strip()
        if not text:
            raise LookupError(f"no stock text {stock_id} in {language!r} (MTL_INTERVIEW_STOCK_TEXTS)")
        return text

    def stock_key(self, avatar_id: str, avatar_version: str, language: str, stock_id: int) -> tuple[str, str, str]:
        """(Redis key, clip name, text): a new text or a re-prepared avatar makes a new clip."""
        text = self.stock_text(language, stock_id)
        digest = hashlib.sha256(f"{avatar_version}\x1f{text}".encode()).hexdigest()[:12]
        return (keys.stock_clip(avatar_id, language, stock_id, digest),
                f"stock_{avatar_id}_{language}_{stock_id}_{digest}", text)

    def ensure_stock(self, avatar_id: str, avatar_version: str, language: str, stock_id: int,
                     owner: str | None = None) -> Clip:
        """The stock clip's entry, enqueueing its render only when no usable one exists; safe
        when many API processes ask at once (claimed with SET NX, replaced under WATCH). `owner`:
        the avatar's owner (None: shared), who alone sees the clip, its jobs and its files."""
        key, name, text = self.stock_key(avatar_id, avatar_version, language, stock_id)
        for _ in range(5):
            raw = self.r.get(key)
            entry = _stock_entry(raw)
            if entry is not None and self._usable(entry):
                return entry
            if entry is None and clip_paths(self.settings, name)[1].is_file():
                # Rendered before Redis lost the entry: the file is the clip.
                entry = Clip(name=name, text=text, audio=f"tts/{name}.wav", video=f"lipsync/{name}.mp4",
                             avatar_id=avatar_id, owner=owner)
                if self.r.set(key, _stock_json(entry), nx=True):
                    self.r.sadd(keys.STOCK_SET, key)
                continue
            claimed = self._claim(key, raw, name, text, avatar_id, language, entry, owner)
            if claimed is not None:
                return claimed
        raise RuntimeError(f"stock clip {key} kept changing; try again")

    def _usable(self, entry: Clip) -> bool:
        state = clip_state(self.settings, self.r, entry)
        if state.status in (ClipStatus.READY, ClipStatus.RENDERING):
            return True
        return state.status == ClipStatus.MISSING and time.time() - entry.claimed_at < CLAIM_GRACE_S

    def _claim(self, key: str, raw: bytes | None, name: str, text: str, avatar_id: str, language: str,
               previous: Clip | None, owner: str | None = None) -> Clip | None:
        entry = Clip(name=name, text=text, tts_job_id=new_job_id(), lipsync_job_id=new_job_id(),
                     audio=f"tts/{name}.wav", video=f"lipsync/{name}.mp4", avatar_id=avatar_id, language=language,
                     renders=(previous.renders if previous else 0) + 1, claimed_at=time.time(), owner=owner)
        with self.r.pipeline() as p:
            try:
                p.watch(key)
                if p.get(key) != raw:
                    return None
                p.multi()
                p.set(key, _stock_json(entry))
                p.sadd(keys.STOCK_SET, key)
                p.execute()
            except WatchError:
                return None  # another request claimed it first: use theirs
        enqueue_clip(self.settings, self.r, name, text, language, avatar_id, "stock", entry.tts_job_id,
                     entry.lipsync_job_id, owner=owner)
        log.info("stock clip %s: render %d enqueued", name, entry.renders)
        return entry

    def stock_entries(self) -> list[Clip]:
        entries = []
        for key in sorted(k.decode() for k in self.r.smembers(keys.STOCK_SET)):
            entry = _stock_entry(self.r.get(key), key)
            if entry is not None:
                entries.append(entry)
        return entries


def _stock_json(entry: Clip) -> str:
    return json.dumps(entry.to_dict(), ensure_ascii=False)


def _stock_entry(raw: bytes | None, key: str | None = None) -> Clip | None:
    return Clip.from_dict(json.loads(raw), key=key) if raw else None
