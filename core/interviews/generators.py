"""Question generators behind one interface, chosen by ``MTL_INTERVIEW_GENERATOR``.

* ``bank``: the curated bank shipped with the project (offline, deterministic).
* ``llm``: any OpenAI-compatible chat-completions server. Its answer must be JSON naming exactly
  the questions asked for; a failure (unreachable, HTTP error, bad JSON, wrong language) is retried
  once, then the bank answers and the reason is recorded (or, with ``MTL_INTERVIEW_LLM_FALLBACK``
  off, the request fails with :class:`GeneratorError`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from core.interviews import MAX_QUESTIONS
from core.interviews.bank import BankError, bank_questions
from core.settings import Settings

log = logging.getLogger(__name__)

MAX_JOB_CHARS = 100
MAX_QUESTION_CHARS = 300
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)
LANGUAGE_NAMES = {"zh": "Simplified Chinese (Mandarin)", "en": "English"}


@dataclass(frozen=True)
class Questions:
    questions: list[str]
    generator: str  # the generator that produced them
    requested: str  # the generator the settings asked for
    family: str | None = None  # the bank's job family, when the bank answered
    fallback: str | None = None  # why the requested generator was not used
    attempts: list[str] = field(default_factory=list)  # one line per failed LLM attempt

    def record(self) -> dict:
        return {"used": self.generator, "requested": self.requested, "family": self.family,
                "fallback_reason": self.fallback, "failed_attempts": self.attempts}


class GeneratorError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class QuestionGenerator(Protocol):
    name: str

    def generate(self, job: str, count: int, language: str) -> Questions: ...


class BankGenerator:
    name = "bank"

    def generate(self, job: str, count: int, language: str) -> Questions:
        try:
            family, questions = bank_questions(job, count, language)
        except BankError as exc:
            raise GeneratorError("bank_error", str(exc)) from exc
        return Questions(questions, "bank", "bank", family=family)


class LlmAnswerError(ValueError):
    """The LLM did not give a usable answer (the message says why, for the record)."""


def parse_answer(content: str, count: int, language: str) -> list[str]:
    """The questions in an LLM's answer, or LlmAnswerError: JSON (a list, or an object with a
    ``questions`` list), distinct non-empty strings in the language asked for, at least `count`."""
    try:
        data = json.loads(_FENCE.sub("", content or ""))
    except json.JSONDecodeError as exc:
        raise LlmAnswerError(f"answer is not JSON: {exc.msg}") from exc
    items = data.get("questions") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise LlmAnswerError("answer has no `questions` list")
    questions: list[str] = []
    for item in items:
        text = item.get("question") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise LlmAnswerError("a question is not a string")
        text = " ".join(text.split())
        if not 4 <= len(text) <= MAX_QUESTION_CHARS:
            raise LlmAnswerError(f"a question has {len(text)} characters")
        if (language == "zh") != bool(_CJK.search(text)):
            raise LlmAnswerError(f"a question is not in {LANGUAGE_NAMES[language]}")
        if text not in questions:
            questions.append(text)
    if len(questions) < count:
        raise LlmAnswerError(f"answer has {len(questions)} distinct questions; {count} were asked for")
    return questions[:count]


class LlmGenerator:
    name = "llm"

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        if not settings.interview_llm_url:
            raise GeneratorError("llm_not_configured", "MTL_INTERVIEW_LLM_URL is not set")
        self.settings = settings
        self.url = settings.interview_llm_url.rstrip("/") + "/chat/completions"
        self.client = client

    def _messages(self, job: str, count: int, language: str) -> list[dict]:
        system = ("You write questions for job interviews. Reply with JSON only, exactly of the form "
                  '{"questions": ["...", "..."]}, with no other text.')
        user = (f"Write exactly {count} distinct interview questions in {LANGUAGE_NAMES[language]} for this job: "
                f"{job}\nEach question is one short spoken sentence, without numbering.")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _ask(self, client: httpx.Client, job: str, count: int, language: str) -> list[str]:
        headers = {"Authorization": f"Bearer {self.settings.interview_llm_api_key}"} \
            if self.settings.interview_llm_api_key else {}
        body = {"model": self.settings.interview_llm_model, "messages": self._messages(job, count, language),
                "temperature": 0.7}
        try:
            response = client.post(self.url, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise LlmAnswerError(f"LLM unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise LlmAnswerError(f"LLM answered HTTP {response.status_code}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LlmAnswerError("LLM response is not a chat completion") from exc
        return parse_answer(content, count, language)

    def generate(self, job: str, count: int, language: str) -> Questions:
        timeout = httpx.Timeout(self.settings.interview_llm_timeout_s, connect=min(5.0, self.settings.interview_llm_timeout_s))
        attempts: list[str] = []
        client = self.client or httpx.Client(timeout=timeout)
        try:
            for attempt in (1, 2):  # one retry: a second failure is not worth the candidate's wait
                try:
                    return Questions(self._ask(client, job, count, language), "llm", "llm", attempts=attempts)
                except LlmAnswerError as exc:
                    log.warning("LLM question generation, attempt %d: %s", attempt, exc)
                    attempts.append(str(exc))
        finally:
            if self.client is None:
                client.close()
        if not self.settings.interview_llm_fallback:
            raise GeneratorError("llm_unavailable", f"the question LLM failed twice: {attempts[-1]}")
        fallback = BankGenerator().generate(job, count, language)
        return Questions(fallback.questions, "bank", "llm", family=fallback.family, fallback=attempts[-1],
                         attempts=attempts)


def load_generator(settings: Settings) -> QuestionGenerator:
    return LlmGenerator(settings) if settings.interview_generator == "llm" else BankGenerator()


def check_request(job: str | None, count: int) -> str:
    """The job text, cleaned, or GeneratorError for what no generator can answer."""
    job = " ".join((job or "").split())
    if not job:
        raise GeneratorError("empty_parameter", "parameter `job` must not be empty")
    if len(job) > MAX_JOB_CHARS:
        raise GeneratorError("invalid_input", f"`job` has {len(job)} characters; the limit is {MAX_JOB_CHARS}")
    if not 1 <= count <= MAX_QUESTIONS:
        raise GeneratorError("invalid_count", f"`count` must be from 1 to {MAX_QUESTIONS}, not {count}")
    return job


def generate_questions(settings: Settings, job: str, count: int, language: str) -> Questions:
    return load_generator(settings).generate(check_request(job, count), count, language)
