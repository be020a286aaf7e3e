"""Responders: what a room answers, as a stream of text deltas. One interface, three kinds:

* `script` (offline default): a brief acknowledgement, then the next question of the room's
  interview (or of the question bank for the room's position), in the room's language.
* `faq` (offline): answers from the operator's material (products, prices, Q/A pairs, shop answers;
  core/conversations/faq.py), the sample product sheet when the room has none; below the match
  threshold a polite deflection, or, with an LLM configured, the LLM with the material in its prompt.
* `llm`: any OpenAI-compatible chat-completions server, streamed (`"stream": true`, SSE); a server
  that ignores streaming and answers one JSON completion is accepted too.

A responder raises ResponderFailed when it cannot answer; the turn then falls back to `script`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Iterator, Protocol

import httpx
from redis import Redis

from core.conversations.faq import index_for, material_prompt, sample_material
from core.conversations.store import MaterialStore
from core.interviews.bank import ordered_questions
from core.interviews.store import InterviewStore
from core.rooms import Room, room_key
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnContext:
    room: Room
    user_text: str
    message_id: str = ""  # the user message answered (a rerun of the turn asks the same question)
    history: list[dict] = field(default_factory=list)  # earlier messages, {"role", "content"}
    language: str = "zh"
    # The reply already said sentences of another responder's (it failed mid-reply): go on from
    # them rather than begin again (the script leaves out its acknowledgement).
    continues: bool = False


class ResponderFailed(RuntimeError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Responder(Protocol):
    name: str

    def reply(self, ctx: TurnContext) -> Iterator[str]: ...


OPENING = {"zh": "好的，我们开始吧。", "en": "Great, let us begin."}  # the first answer is no answer yet
ACKS = {
    "zh": ["好的，谢谢你的回答。", "明白了，谢谢。", "嗯，这个回答很清楚。", "好的，我了解了。"],
    "en": ["Thank you for your answer.", "I see, thank you.", "Got it, that is clear.", "All right, understood."],
}
DEFER = {"zh": "这个问题我们可以在最后再聊。", "en": "Let us come back to that question at the end."}
CLOSING = {"zh": "今天的问题就到这里，感谢你的时间。", "en": "That is all my questions for today. Thank you for your time."}


def opening_phrases(first_clause_chars: int = 0) -> list[tuple[str, str]]:
    """(text, language) of the fixed pieces replies begin with, cut as a turn cuts them: the TTS worker
    keeps their speech cached (workers/tts.py warm_phrases), so a reply's first piece plays without a
    synthesis."""
    from core.conversations.sentences import SentenceCutter

    out = []
    for language in ("zh", "en"):
        for text in (OPENING[language], *ACKS[language], *FAQ_LEADS[language]):
            cutter = SentenceCutter(first_clause_chars=first_clause_chars)
            out += [(piece, language) for piece in cutter.push(text) + cutter.flush()]
    return list(dict.fromkeys(out))


# The question index a message is answered with: the next one the first time, the same one when
# the turn runs again (its worker died mid-way and the job was recovered).
_ASKED = """
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if seen then return tonumber(seen) end
local n = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], n)
return n
"""


class ScriptResponder:
    name = "script"

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.r = redis
        self.settings = settings

    def questions(self, room: Room, language: str) -> list[str]:
        interview = InterviewStore(self.r, self.settings).for_room(room.id)
        if interview and interview.language == language:
            return [q.text for q in interview.questions]
        return ordered_questions(room.job or "", language)[1]

    def reply(self, ctx: TurnContext) -> Iterator[str]:
        language = ctx.language if ctx.language in ACKS else "zh"
        asked = int(self.r.eval(_ASKED, 1, room_key(ctx.room.id, "script"), ctx.message_id or "-"))
        parts = [] if ctx.continues else \
            [OPENING[language] if asked == 0 else ACKS[language][(asked - 1) % len(ACKS[language])]]
        if ctx.user_text.rstrip().endswith(("?", "？")):
            parts.append(DEFER[language])
        questions = self.questions(ctx.room, language)
        parts.append(questions[asked] if asked < len(questions) else CLOSING[language])
        yield (" " if language == "en" else "").join(parts)


class LlmResponder:
    name = "llm"

    def __init__(self, settings: Settings) -> None:
        if not settings.llm_url:
            raise ResponderFailed("llm_not_configured", "MTL_LLM_URL is not set")
        self.settings = settings
        self.url = settings.llm_url.rstrip("/") + "/chat/completions"

    def _body(self, ctx: TurnContext) -> dict:
        prompt = ctx.room.system_prompt or self.settings.llm_system_prompt.get(ctx.language) or ""
        messages = ([{"role": "system", "content": prompt}] if prompt else []) + ctx.history + \
            [{"role": "user", "content": ctx.user_text}]
        return {"model": ctx.room.llm_model or self.settings.llm_model, "messages": messages, "stream": True}

    def reply(self, ctx: TurnContext) -> Iterator[str]:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.llm_api_key}"} if s.llm_api_key else {}
        # The read timeout bounds every wait for the next bytes; the turn also bounds the first
        # token and the whole reply (it reads this generator from another thread).
        timeout = httpx.Timeout(connect=min(3.0, s.llm_first_token_timeout_s), read=s.llm_idle_timeout_s,
                                write=5.0, pool=5.0)
        try:
            with llm_client().stream("POST", self.url, json=self._body(ctx), headers=headers,
                                  timeout=timeout) as response:
                if response.status_code != 200:
                    raise ResponderFailed("llm_http_error", f"the LLM answered HTTP {response.status_code}")
                if "json" in response.headers.get("content-type", ""):
                    yield _whole_completion(response.read())
                    return
                yield from _sse_deltas(response.iter_lines())
        except httpx.TimeoutException as exc:
            raise ResponderFailed("llm_timeout", f"the LLM did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ResponderFailed("llm_unreachable", f"the LLM is unreachable: {exc}") from exc


FAQ_LEADS = {"zh": ["好的！", "好嘞！", "这个问得好！"], "en": ["Sure!", "Good question!", "Of course!"]}


class FaqResponder:
    name = "faq"

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.r = redis
        self.settings = settings

    def reply(self, ctx: TurnContext) -> Iterator[str]:
        material = MaterialStore(self.r).get(ctx.room.id) or sample_material()
        found = index_for(material, ctx.language).match(ctx.user_text)
        log.info("room %s faq: %s (score %.2f)", ctx.room.id, found.label, found.score)
        if found.kind != "deflect":
            # A short acknowledgement first, as a host would: it is its own sentence, spoken (from the
            # TTS cache after its first use) while the answer's longer sentence is synthesised.
            leads = FAQ_LEADS.get(ctx.language, FAQ_LEADS["en"])
            yield leads[sum(map(ord, ctx.user_text)) % len(leads)] + ("" if ctx.language == "zh" else " ")
            yield found.answer
            return
        if not self.settings.llm_url:
            yield found.answer
            return
        # Not covered by the material: the LLM may answer, told to keep to the material.
        prompt = "\n\n".join(p for p in (ctx.room.system_prompt, material_prompt(material, ctx.language)) if p)
        started = False
        try:
            for delta in LlmResponder(self.settings).reply(replace(ctx, room=replace(ctx.room, system_prompt=prompt))):
                started = True
                yield delta
        except ResponderFailed as exc:
            if started:
                raise
            log.warning("room %s faq: the LLM failed (%s); deflecting", ctx.room.id, exc.code)
            yield found.answer


_CLIENT: httpx.Client | None = None


def llm_client() -> httpx.Client:
    """One pooled client per process: a turn reuses the LLM connection (no new TCP and TLS
    handshake before every first token). httpx clients are safe to share between threads."""
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = httpx.Client(limits=httpx.Limits(max_connections=32, max_keepalive_connections=8))
    return _CLIENT


def _whole_completion(raw: bytes) -> str:
    try:
        return json.loads(raw)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ResponderFailed("llm_bad_answer", "the LLM's answer is not a chat completion") from exc


def _sse_deltas(lines: Iterator[str]) -> Iterator[str]:
    done = False
    for line in lines:
        # After [DONE] the body is read to its end, so the pooled connection can be reused.
        if done or not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            choice = json.loads(data)["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ResponderFailed("llm_bad_answer", "the LLM sent an event that is not a completion chunk") from exc
        delta = (choice.get("delta") or {}).get("content") or ""
        if delta:
            yield delta


def load_responder(name: str, redis: Redis, settings: Settings) -> Responder:
    if name == "llm":
        return LlmResponder(settings)
    if name == "script":
        return ScriptResponder(redis, settings)
    if name == "faq":
        return FaqResponder(redis, settings)
    raise ResponderFailed("unknown_responder", f"no responder {name!r}; choose script, faq or llm")
