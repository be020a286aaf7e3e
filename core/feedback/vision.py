"""Optional: an OpenAI-compatible vision model writes the summary from the frame image and the measures.

Used only when ``MTL_FEEDBACK_VISION_URL`` is set; any failure (unreachable, HTTP error, empty or
overlong answer) returns None with the reason, and the local rule-based summary is used.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import httpx

from core.settings import Settings

log = logging.getLogger(__name__)

MAX_SUMMARY_CHARS = 600


def vision_summary(settings: Settings, image: Path, measures: dict, score: int, language: str) -> tuple[str | None, str | None]:
    """(summary, None) from the model, or (None, why not)."""
    if not settings.feedback_vision_url:
        return None, "not configured"
    lang = "Simplified Chinese" if language == "zh" else "English"
    prompt = (f"This is a frame from a job candidate's recorded interview answer, with measures of the face over "
              f"the whole answer: {json.dumps(measures)} and a score of {score}/100. In {lang}, write two or three "
              "short sentences of feedback on eye contact, posture and expression. Plain text only.")
    image_url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
    body = {"model": settings.feedback_vision_model, "temperature": 0.3, "messages": [
        {"role": "user", "content": [{"type": "text", "text": prompt},
                                     {"type": "image_url", "image_url": {"url": image_url}}]}]}
    headers = {"Authorization": f"Bearer {settings.feedback_vision_api_key}"} if settings.feedback_vision_api_key else {}
    url = settings.feedback_vision_url.rstrip("/") + "/chat/completions"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=settings.feedback_vision_timeout_s)
        response.raise_for_status()
        text = " ".join(str(response.json()["choices"][0]["message"]["content"]).split())
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("vision summary failed, using the local one: %s", exc)
        return None, f"{type(exc).__name__}: {exc}"[:300]
    if not text or len(text) > MAX_SUMMARY_CHARS:
        return None, f"answer of {len(text)} characters"
    return text, None
