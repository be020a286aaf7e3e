"""An OpenAI-compatible chat-completions server that streams a fixed reply, for tests and benchmarks.

    python -m bench.llmstub --port 8931 [--language en] [--first-delay 0.25] [--first-sentence 0.3]
                            [--token-delay 0.05] [--reply TEXT]...

then point the fleet at it: `MTL_LLM_URL=http://127.0.0.1:8931/v1 MTL_CONVERSATION_RESPONDER=llm`.

`POST /v1/chat/completions` with `"stream": true` answers `text/event-stream` (HTTP/1.1, chunked,
one chunk per event, flushed at once): `data: {"choices": [{"delta": {"content": ...}}]}` per token,
then a final chunk with `finish_reason: "stop"` and `data: [DONE]`. Tokens are a few characters each,
like a real model's (Chinese: 1-3 characters; English: a word with its trailing space). The first
token is sent `first_delay_s` after the request's body was read, the next ones every `token_delay_s`;
with `first_sentence_s`, the first sentence's tokens are spread evenly so that its last one leaves
exactly `first_sentence_s` after the request (the time a streaming LLM takes to "answer its first
sentence"). Without `"stream": true` the whole reply comes as one `chat.completion` JSON object.
`GET /v1/models` lists the one model.

Each request is recorded (`.requests`: body, Authorization header, what it was answered with and the
wall time every token was sent); a queue of behaviours scripts the next requests, e.g.

    stub = LlmStub(first_delay_s=0.25, first_sentence_s=0.3)
    stub.then_status(503).then_hang(10).then_stall(after_tokens=3, seconds=30)
    ...  # the next three requests fail that way, later ones stream normally
    stub.requests[-1].token_times   # [(wall time, token), ...]
    stub.stop()
"""

from __future__ import annotations

import argparse
import json
import random
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLIES = {
    "zh": "好的，谢谢你的回答。我们来聊聊你最近做过的一个项目。你在项目里负责哪一部分？",
    "en": "All right, thank you for your answer. Let us talk about a project you worked on recently. "
          "Which part of it were you responsible for?",
}
MODEL = "llmstub"
_WORD = re.compile(r"[^\s\u3000-\u9fff\uf900-\uffef]+\s*|\s+")
_SENTENCE_END = re.compile(r"[。！？!?；;…]|\.(\s|$)")


def tokens_of(text: str, seed: int = 0) -> list[str]:
    """Cut a reply into model-like tokens: runs of CJK text 1-3 characters at a time (punctuation
    stays with the characters before it), other text a word and its trailing whitespace at a time
    (so an English sentence is complete with the token that ends it)."""
    rng = random.Random(seed)
    out: list[str] = []
    i = 0
    while i < len(text):
        if _cjk(text[i]):
            n, j = rng.randint(1, 3), i
            while j < len(text) and j - i < n and _cjk(text[j]) and not _punct(text[j]):
                j += 1
            while j < len(text) and _punct(text[j]):
                j += 1  # punctuation goes with the characters before it
        else:
            j = _WORD.match(text, i).end()
        out.append(text[i:j])
        i = j
    return out


def _punct(ch: str) -> bool:
    return not ch.isalnum() and not ch.isspace()


def _cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uf900" <= ch <= "\uffef"


def first_sentence_tokens(tokens: list[str]) -> int:
    """How many tokens it takes to complete the first sentence (all of them if none ends)."""
    text = ""
    for n, token in enumerate(tokens, 1):
        text += token
        if _SENTENCE_END.search(text):
            return n
    return len(tokens)


@dataclass
class Behaviour:
    """What one request gets. kind: `stream` (normal; a non-streaming request gets the JSON),
    `status` (HTTP `status` with an OpenAI-style error body), `hang` (nothing for `seconds`, then
    the connection closes without an answer), `stall` (stream `after_tokens` tokens, then nothing
    for `seconds`, then the connection drops mid-body — or, with `resume`, the reply goes on)."""

    kind: str = "stream"
    status: int = 200
    seconds: float = 0.0
    after_tokens: int = 0
    resume: bool = False
    reply: str | None = None  # overrides the stub's reply for this request
    first_delay_s: float | None = None
    token_delay_s: float | None = None


@dataclass
class Request:
    """One request as the stub saw and answered it (times are wall clock, time.time())."""

    path: str
    auth: str | None
    body: dict
    received_at: float
    behaviour: Behaviour
    stream: bool = False
    reply: str = ""
    token_times: list[tuple[float, str]] = field(default_factory=list)
    first_sentence_at: float | None = None  # when the token completing the first sentence was sent
    finished_at: float | None = None  # [DONE] (or the JSON answer, the error status) sent
    disconnected_at: float | None = None  # the client went away before the end (e.g. a barge-in)

    @property
    def first_token_at(self) -> float | None:
        return self.token_times[0][0] if self.token_times else None

    @property
    def last_token_at(self) -> float | None:
        return self.token_times[-1][0] if self.token_times else None

    @property
    def sent_text(self) -> str:
        return "".join(t for _, t in self.token_times)


class _Gone(Exception):
    """The client closed the connection."""


class LlmStub:
    """The server, on 127.0.0.1 (`port` 0: a free one), serving from a daemon thread at once.

    reply: the text every request gets, or a list used in turn (request n gets reply[n % len]);
    None: the fixed 3-sentence reply in `language`.
    """

    def __init__(self, reply: str | list[str] | None = None, first_delay_s: float = 0.3,
                 token_delay_s: float = 0.05, first_sentence_s: float | None = None, language: str = "zh",
                 port: int = 0, host: str = "127.0.0.1", seed: int = 0) -> None:
        if reply is None:
            reply = REPLIES[language]
        self.replies = [reply] if isinstance(reply, str) else list(reply)
        if not self.replies:
            raise ValueError("no reply")
        if first_sentence_s is not None and first_sentence_s < first_delay_s:
            raise ValueError("first_sentence_s must not be earlier than first_delay_s")
        self.first_delay_s, self.token_delay_s, self.first_sentence_s = first_delay_s, token_delay_s, first_sentence_s
        self.seed = seed
        self.requests: list[Request] = []
        self.served = 0
        self.behaviours: list[Behaviour] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = _Server((host, port), self._handler())
        self.host, self.port = host, self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                                       name="llmstub")
        self.thread.start()

    # ---- scripting ----
    def then(self, behaviour: Behaviour) -> "LlmStub":
        with self._lock:
            self.behaviours.append(behaviour)
        return self

    def then_stream(self, reply: str | None = None, first_delay_s: float | None = None,
                    token_delay_s: float | None = None) -> "LlmStub":
        return self.then(Behaviour("stream", reply=reply, first_delay_s=first_delay_s, token_delay_s=token_delay_s))

    def then_status(self, status: int) -> "LlmStub":
        return self.then(Behaviour("status", status=status))

    def then_hang(self, seconds: float) -> "LlmStub":
        return self.then(Behaviour("hang", seconds=seconds))

    def then_stall(self, after_tokens: int, seconds: float, resume: bool = False) -> "LlmStub":
        return self.then(Behaviour("stall", after_tokens=after_tokens, seconds=seconds, resume=resume))

    def clear(self) -> None:
        """Forget the recorded requests and the behaviours not used yet."""
        with self._lock:
            self.requests.clear()
            self.behaviours.clear()

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {n} requests reached the LLM stub")
            time.sleep(0.01)
        return self.requests

    def stop(self) -> None:
        self._stopping.set()  # requests asleep (hang, stall, token delays) end at once
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LlmStub":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- serving ----
    def _next(self, index: int) -> tuple[Behaviour, str]:
        with self._lock:
            behaviour = self.behaviours.pop(0) if self.behaviours else Behaviour()
        return behaviour, behaviour.reply if behaviour.reply is not None else self.replies[index % len(self.replies)]

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})
                else:
                    self._json(404, _error("not found", "invalid_request_error"))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                received = time.time()
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, _error(f"no route {self.path}", "invalid_request_error"))
                    return
                try:
                    body = json.loads(raw or b"{}")
                    assert isinstance(body, dict)
                except (ValueError, AssertionError):
                    self._json(400, _error("the body is not a JSON object", "invalid_request_error"))
                    return
                with stub._lock:
                    index, stub.served = stub.served, stub.served + 1
                behaviour, reply = stub._next(index)
                rec = Request(path=self.path, auth=self.headers.get("Authorization"), body=body, received_at=received,
                              behaviour=behaviour, stream=bool(body.get("stream")), reply=reply)
                with stub._lock:
                    stub.requests.append(rec)
                try:
                    self._answer(rec, behaviour, reply)
                except (_Gone, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    rec.disconnected_at = rec.disconnected_at or time.time()
                    self.close_connection = True

            def _answer(self, rec: Request, behaviour: Behaviour, reply: str) -> None:
                if behaviour.kind == "status":
                    self._json(behaviour.status, _error(f"scripted failure (HTTP {behaviour.status})", "server_error"))
                    rec.finished_at = time.time()
                    return
                if behaviour.kind == "hang":
                    self._sleep_until(rec.received_at + behaviour.seconds)
                    self.close_connection = True  # no answer at all
                    return
                first = behaviour.first_delay_s if behaviour.first_delay_s is not None else stub.first_delay_s
                step = behaviour.token_delay_s if behaviour.token_delay_s is not None else stub.token_delay_s
                tokens = tokens_of(reply, stub.seed)
                if not rec.stream:
                    self._sleep_until(rec.received_at + first + step * max(0, len(tokens) - 1))
                    now = time.time()
                    self._json(200, {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                                     "created": int(now), "model": rec.body.get("model") or MODEL,
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": reply}}],
                                     "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens),
                                               "total_tokens": len(tokens)}})
                    rec.token_times.append((now, reply))
                    rec.first_sentence_at = rec.finished_at = now
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
                model = rec.body.get("model") or MODEL

                def chunk(delta: dict, finish: str | None = None) -> dict:
                    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

                self._event(chunk({"role": "assistant", "content": ""}))
                n_first = first_sentence_tokens(tokens)
                spread = stub.first_sentence_s if behaviour.first_delay_s is None else None
                schedule = _schedule(len(tokens), first, step, spread, n_first)
                for n, (token, at) in enumerate(zip(tokens, schedule)):
                    if behaviour.kind == "stall" and n == behaviour.after_tokens:
                        stalled = time.time()
                        self._sleep_until(stalled + behaviour.seconds)
                        if not behaviour.resume:
                            # Dropped mid-body: no last chunk, no finish_reason, no [DONE].
                            self.close_connection = True
                            return
                        shift = time.time() - stalled
                        schedule = [t + shift for t in schedule]
                        at = schedule[n]
                    self._sleep_until(rec.received_at + at)
                    self._event(chunk({"content": token}))
                    sent = time.time()
                    rec.token_times.append((sent, token))
                    if n + 1 == n_first:
                        rec.first_sentence_at = sent
                self._event(chunk({}, "stop"))
                self._chunk(b"data: [DONE]\n\n")
                self._end_chunks()
                rec.finished_at = time.time()

            def _event(self, payload: dict) -> None:
                self._chunk(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _end_chunks(self) -> None:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _sleep_until(self, when: float) -> None:
                """Wait, noticing a client that closes the connection meanwhile (and the stub stopping)."""
                while True:
                    left = when - time.time()
                    if left <= 0:
                        return
                    if stub._stopping.is_set():
                        raise _Gone()
                    try:
                        readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    except (OSError, ValueError) as exc:
                        raise _Gone() from exc
                    if readable:
                        try:
                            peek = self.connection.recv(1, socket.MSG_PEEK)
                        except OSError as exc:
                            raise _Gone() from exc
                        if not peek:
                            raise _Gone()
                        time.sleep(min(left, 0.05))  # a pipelined request: not ours to read now

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that resets its kept-alive connection (e.g. it stopped reading after [DONE]) is
        # no error of the stub's; anything else is reported as usual.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _schedule(n: int, first: float, step: float, first_sentence_s: float | None, n_first: int) -> list[float]:
    """Offsets (s after the request) at which each of n tokens is sent."""
    if first_sentence_s is None or n_first <= 1:
        return [first + step * i for i in range(n)]
    gap = (first_sentence_s - first) / (n_first - 1)
    head = [first + gap * i for i in range(n_first)]
    return head + [first_sentence_s + step * (i + 1) for i in range(n - n_first)]


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "code": None}}


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description="An OpenAI-compatible streaming chat-completions stub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--language", choices=sorted(REPLIES), default="zh")
    parser.add_argument("--reply", action="append", help="the reply (repeat: successive requests get each in turn)")
    parser.add_argument("--first-delay", type=float, default=0.3, help="seconds to the first token")
    parser.add_argument("--first-sentence", type=float, default=None,
                        help="seconds to the token that completes the first sentence (default: no spreading)")
    parser.add_argument("--token-delay", type=float, default=0.05, help="seconds between the next tokens")
    args = parser.parse_args()
    stub = LlmStub(args.reply, first_delay_s=args.first_delay, token_delay_s=args.token_delay,
                   first_sentence_s=args.first_sentence, language=args.language, port=args.port, host=args.host)
    # Ctrl-C and SIGTERM both stop it (a shell may start a background job with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"LLM stub at {stub.url} (POST {stub.url}/chat/completions); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(1)
            for rec in stub.requests[:]:
                if rec.finished_at or rec.disconnected_at:
                    stub.requests.remove(rec)
                    end = rec.finished_at or rec.disconnected_at
                    print(json.dumps({"stream": rec.stream, "tokens": len(rec.token_times),
                                      "first_token_s": round(rec.first_token_at - rec.received_at, 3)
                                      if rec.first_token_at else None,
                                      "first_sentence_s": round(rec.first_sentence_at - rec.received_at, 3)
                                      if rec.first_sentence_at else None,
                                      "total_s": round(end - rec.received_at, 3),
                                      "disconnected": rec.disconnected_at is not None}, ensure_ascii=False),
                          flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
