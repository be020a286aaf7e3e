"""Expression-feedback worker: a candidate's answer video -> score, components and summary in SQL.

Frames are sampled every ``MTL_FEEDBACK_SAMPLE_INTERVAL_S`` (decoded by ffmpeg at that rate, at most
640 px on the long side), measured on the refined face mesh (core/feedback/measure.py), scored and
summarised (core/feedback/report.py), and written to the results table, replacing an earlier
result of the same (ms_id, index). The most frontal sampled frame is kept as the row's image.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
from rq import get_current_job

from core.feedback.db import connect, replace_result
from core.feedback.measure import AnswerMeasures, FaceMeasurer, FrameMeasure, summarise
from core.feedback.report import components, findings, score, summary
from core.feedback.vision import vision_summary
from core.files import resolve_owned
from core.jobs import set_progress
from core.media import MediaInfo, iter_video_frames, probe
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_SIDE = 640
_measurer: FaceMeasurer | None = None


class FeedbackError(ValueError):
    """An answer that cannot be judged; `code` reaches the client through the job's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def measurer() -> FaceMeasurer:
    global _measurer
    if _measurer is None:
        _measurer = FaceMeasurer()
    return _measurer


def check_video(settings: Settings, info: MediaInfo) -> None:
    if not info.has_video or info.still_image:
        raise FeedbackError("no_frames", "the file has no video frames; an answer must be a video of the candidate")
    if info.duration_s > settings.feedback_max_video_s:
        raise FeedbackError("video_too_long", f"the video is {info.duration_s:.0f} s; the limit is "
                            f"{settings.feedback_max_video_s:.0f} s")


def sample_answer(settings: Settings, path: Path, info: MediaInfo, job=None) -> tuple[list[FrameMeasure | None], np.ndarray | None]:
    """Measures of every sampled frame, and the frame to show (the most frontal face; else the middle)."""
    interval = settings.feedback_sample_interval_s
    scale = min(1.0, MAX_SIDE / max(info.width, info.height, 1))
    width, height = max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2)
    expected = max(1, int(info.duration_s / interval))
    mesh = measurer()
    mesh.reset()  # tracking mode: the previous answer's face must not seed this one
    samples: list[FrameMeasure | None] = []
    shown, shown_cost = None, math.inf
    for k, frame in enumerate(iter_video_frames(path, width, height, fps=1.0 / interval)):
        m = mesh.measure(frame)
        samples.append(m)
        cost = abs(m.yaw) + abs(m.pitch) if m is not None else (1e6 if k == expected // 2 else math.inf)
        if cost < shown_cost or shown is None:
            shown, shown_cost = frame.copy(), cost
        if k % 10 == 0:
            set_progress(job, 0.9 * min(1.0, (k + 1) / expected))
    return samples, shown


def write_frame(settings: Settings, frame: np.ndarray, name: str) -> Path:
    path = settings.kind_dir("feedback") / f"{name}.jpg"
    tmp = path.with_name(f".{path.name}.tmp.jpg")
    if not cv2.imwrite(str(tmp), frame, [cv2.IMWRITE_JPEG_QUALITY, 88]):
        raise OSError(f"could not write {path.name}")
    tmp.replace(path)
    return path


def describe(settings: Settings, measures: AnswerMeasures, image: Path, language: str) -> dict:
    """Score, components, findings and summary; the vision model writes the summary when configured."""
    parts = components(measures)
    total = score(parts)
    codes = findings(measures)
    text, analyser, vision_error = summary(codes, language, total), "local", None
    if settings.feedback_vision_url:
        written, vision_error = vision_summary(settings, image, measures.as_dict(), total, language)
        if written:
            text, analyser = written, f"vision:{settings.feedback_vision_model}"
    return {"score": total, "components": parts, "findings": codes, "summary": text, "analyser": analyser,
            "vision_error": vision_error}


def analyse_answer(source: str, ms_id: str, index: int, output_name: str, language: str | None = None,
                   admin: bool = False) -> dict:
    """Job function of the `feedback` queue; idempotent (the row is replaced, the image rewritten).
    The row's owner is the job's (its meta); only an `admin` job may write into another key's interview."""
    settings = get_settings()
    job = get_current_job()
    language = language or settings.feedback_language
    path = resolve_owned(settings, source)
    info = probe(path)
    check_video(settings, info)
    samples, shown = sample_answer(settings, path, info, job)
    if not samples or shown is None:
        raise FeedbackError("no_frames", "no frame of the video could be decoded")
    measures = summarise(samples, settings.feedback_sample_interval_s)
    image = write_frame(settings, shown, output_name)
    result = describe(settings, measures, image, language)
    url = f"{settings.api_base}/tests/{image.name}"
    replace_result(settings, {
        "ms_id": ms_id, "index": index, "content": result["summary"], "sort": result["score"], "url": url,
        **result["components"], "findings": ",".join(result["findings"]), "language": language,
        "measures": json.dumps(measures.as_dict(), sort_keys=True), "analyser": result["analyser"], "source": source,
        "job_id": job.id if job is not None else None, "owner": (job.meta or {}).get("owner") if job else None},
        admin=admin)
    log.info("feedback %s/%s: score %d (%s)", ms_id, index, result["score"], ",".join(result["findings"]))
    return {"ms_id": ms_id, "index": index, **result, "measures": measures.as_dict(), "url": url,
            "image": f"feedback/{image.name}", "legacy_path": f"tests/{image.name}", "source": source}


def warm_up(settings: Settings) -> None:
    measurer()
    try:
        connect(settings)  # creates the table; a database down now is retried by each job
    except Exception:
        log.exception("feedback database not reachable at start; jobs will retry")
