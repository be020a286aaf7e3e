"""Conversation latency (issue 9): from a message to the first words of the room's reply a viewer hears.

    python -m bench.conversation_latency [--messages 10] [--audio-messages 5]
    python -m bench.conversation_latency --url http://127.0.0.1:8181 --stub-port 8931
    python -m bench.conversation_latency --responder faq --audio-messages 0   (or script)

* text: from sending `POST /v1/rooms/{id}/messages {"text": ...}` to the first reply speech a viewer
  of the room's RTMP stream hears; target p50 <= 1.5 s, with an LLM that answers its first sentence
  300 ms after the request.
* audio: the same from `POST .../messages {"audio": <file ref>}` with a spoken question already
  uploaded (made with the service's own TTS, not timed): the question's end is available to the
  service when the POST is sent, so this adds the recognition (ASR) of the question.

The LLM is bench/llmstub.py, an OpenAI-compatible streaming server: its first token leaves 250 ms
after it has read the request (`--first-token`), the rest of the first sentence's tokens (1-3
characters each) are spread evenly up to the one that ends it (its `。`) at exactly 300 ms
(`--first-sentence`), then one token every 50 ms (`--token-delay`). Each message gets a different
3-sentence Mandarin reply (the service caches TTS by text: one repeated reply would be spoken from
the cache after the first turn, which no real LLM allows).

By default the bench starts its own fleet as `make run` lays it out (`python -m avatars demo`, then
`python -m core.fleet run --data-dir <tmp>`, on free ports, with `MTL_LLM_URL=<stub>/v1` and
`MTL_CONVERSATION_RESPONDER=llm`) and stops it with Ctrl-C's signal at the end. With `--url` it uses
a running fleet whose `MTL_LLM_URL` is `http://127.0.0.1:<--stub-port>/v1` instead.

The room is created with `responder: "llm"`; once it publishes and a viewer (bench/viewer.py, the
room_latency viewer: low-latency ffmpeg pull, 20 ms RMS windows, speech = first window above 0.02)
hears its idle silence, each message is sent only after the previous reply has finished (every
reply spoken, interrupted or failed, the room idle, nothing queued, 1 s of silence heard), so no
message barges in. A text and an audio warm-up message come first (the first turn, LLM connection
and recognition); they are shown apart, not in the figures. The breakdown (p50 over the measured
messages, seconds after the POST) comes from the ASR job's `ended_at` (audio), the room's WebSocket
feed (`reply_start`: the turn began; `reply_sentence` 0: the first sentence cut from the stream and
queued for TTS), the stub's own clock (request received, first sentence sent) and the publisher's
`speech_start` event (its wall time `t`: the first sentence's speech begins in the stream).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from bench.common import emit
from bench.llmstub import LlmStub
from bench.viewer import AudioViewer

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# Replies: 5 x 6 different first sentences, each followed by two of the project questions.
_OPENERS = ["好的", "嗯", "明白了", "不错", "谢谢"]
_ACKS = ["谢谢你的回答。", "这个回答很清楚。", "你讲得很具体。", "我了解你的意思了。", "这一点很有意思。", "听起来很有挑战。"]
_FOLLOW = ["我们来聊聊你最近做过的一个项目。你在项目里负责哪一部分？",
           "接下来说说团队合作。你们遇到分歧时是怎么解决的？",
           "我想多了解一下技术细节。你选择这个方案的原因是什么？",
           "再谈谈结果吧。这个项目最后达到预期了吗？",
           "我们换个话题。你平时是怎么学习新技术的？",
           "说说困难的部分。你遇到过的最大问题是什么？",
           "聊聊你的职业规划。三年后你希望自己在做什么？"]
# What the candidate says: typed for the text path, spoken (service TTS) for the audio path.
ANSWERS = ["我最近做了一个推荐系统，主要负责数据处理。", "我们团队一共有五个人，我负责后端开发。",
           "这个项目上线以后，用户的留存提高了不少。", "我平时喜欢看技术博客，也会自己写一些小工具。",
           "最大的困难是数据量太大，处理起来很慢。", "我选择这个方案，是因为它的维护成本比较低。",
           "我们遇到分歧的时候，会先把各自的理由写下来。", "三年以后，我希望能够带一个小团队。",
           "我在上一家公司工作了两年，主要做支付系统。", "我觉得沟通能力和技术能力一样重要。"]
# --responder faq: customer questions about the sample product sheet, each with its own answer (the
# service caches speech by text: a repeated answer would be spoken from the cache).
FAQ_QUESTIONS = ["保温杯多少钱", "电饭煲多少钱", "面霜多少钱", "耳机多少钱", "龙井多少钱", "羽绒服多少钱",
                 "什么时候发货", "怎么买", "有没有优惠", "可以退货吗"]
SPOKEN = ["我负责的是后端服务和数据库的设计。", "这个项目最后按时上线了，效果还不错。",
          "我会先看官方文档，然后动手做一个小例子。", "最大的问题是线上故障，我们花了一周才解决。",
          "我希望以后能在人工智能方向继续深入。", "我们用了消息队列来处理高峰期的流量。",
          "我们每周会做一次代码评审，互相提意见。", "上线之前，我们写了很多自动化测试。"]
DONE_REPLY = {"spoken", "interrupted", "failed"}


def replies(n: int, shuffle: bool = False) -> list[str]:
    """n replies whose first sentences differ (30 of them, then they repeat); `shuffle`: a random
    choice, so that runs against one long-running fleet rarely meet a sentence it has cached."""
    pairs = [(o, a) for a in _ACKS for o in _OPENERS]
    if shuffle:
        random.shuffle(pairs)
    return [f"{pairs[i % len(pairs)][0]}，{pairs[i % len(pairs)][1]}{_FOLLOW[i % len(_FOLLOW)]}" for i in range(n)]


class NotReady(SystemExit):
    pass


# ---- the fleet ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OwnFleet:
    """`make run`'s layout (avatars demo, then core.fleet run under supervisord) on free ports."""

    proc: subprocess.Popen
    data_dir: Path
    url: str

    @classmethod
    def start(cls, llm_url: str, extra_env: dict[str, str], timeout: float = 300) -> "OwnFleet":
        data_dir = Path(tempfile.mkdtemp(prefix="mtl-convlat-"))
        api_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_")}
        env.update({"MTL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "MTL_DATA_DIR": str(data_dir),
                    "MTL_MODELS_DIR": str(ROOT / "models"), "MTL_API_PORT": str(api_port),
                    "MTL_RTMP_PORT": str(free_port()), "MTL_MEDIA_HTTP_PORT": str(free_port()),
                    "MTL_LLM_URL": llm_url, "MTL_CONVERSATION_RESPONDER": "llm", "PYTHONUNBUFFERED": "1",
                    **extra_env})
        log(f"fleet: preparing the demo avatar in {data_dir}")
        subprocess.run([PY, "-m", "avatars", "demo"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        out = (data_dir / "fleet.out").open("wb")
        proc = subprocess.Popen([PY, "-m", "core.fleet", "run", "--data-dir", str(data_dir)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        fleet = cls(proc, data_dir, f"http://127.0.0.1:{api_port}")
        log(f"fleet: starting at {fleet.url} (supervisord pid {proc.pid})")
        deadline = time.monotonic() + timeout
        while not _ready(fleet.url):
            if proc.poll() is not None or time.monotonic() > deadline:
                fleet.stop(keep=True)
                raise RuntimeError(f"the fleet did not become ready (logs: {data_dir / 'logs'})")
            time.sleep(0.5)
        return fleet

    def stop(self, keep: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # as Ctrl-C on `make run`: stream workers first, then the rest
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if keep:
            log(f"fleet: logs kept in {self.data_dir / 'logs'}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def log(text: str) -> None:
    sys.stderr.write(f"[conversation_latency {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


# ---- one room's conversation ----

@dataclass
class Sample:
    kind: str
    sent: float
    message_id: str = ""
    heard: float | None = None
    llm_request: float | None = None
    llm_first_sentence: float | None = None
    asr_done: float | None = None
    reply_start: float | None = None
    first_sentence_queued: float | None = None
    speech_start: float | None = None
    responder: str | None = None
    reply_status: str | None = None
    notes: list[str] = field(default_factory=list)

    def since_post(self, t: float | None) -> float | None:
        return None if t is None else t - self.sent

    @property
    def latency(self) -> float | None:
        return self.since_post(self.heard)


def _when(job: dict, key: str) -> float | None:
    value = job.get(key)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


class Conversation:
    def __init__(self, client: httpx.Client, stub: LlmStub, room: dict, viewer: AudioViewer,
                 feed: "Feed | None") -> None:
        self.client, self.stub, self.room, self.viewer, self.feed = client, stub, room, viewer, feed
        self.rid = room["id"]

    def messages(self) -> list[dict]:
        r = self.client.get(f"/v1/rooms/{self.rid}/messages")
        r.raise_for_status()
        return r.json()

    def wait_finished(self, timeout: float = 60) -> bool:
        """Every reply done (spoken, interrupted or failed), the room idle, nothing queued, and 1 s of
        silence heard."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            room = self.client.get(f"/v1/rooms/{self.rid}").json()
            replies_done = all(m["status"] in DONE_REPLY for m in self.messages() if m["role"] == "assistant")
            if (replies_done and room.get("state") == "idle" and not room.get("pending_utterances")
                    and self.viewer.quiet_since(1.0)):
                return True
            time.sleep(0.2)
        return False

    def send(self, kind: str, payload: dict, timeout: float = 20) -> Sample:
        if not self.wait_finished():
            log("the previous reply did not finish in 60 s; sending anyway (it will be interrupted)")
        n_requests = len(self.stub.requests)
        sample = Sample(kind, time.time())
        r = self.client.post(f"/v1/rooms/{self.rid}/messages", json=payload)
        if r.status_code != 202:
            raise RuntimeError(f"POST /v1/rooms/{self.rid}/messages answered {r.status_code}: {r.text[:300]}")
        accepted = r.json()
        sample.message_id = accepted["message_id"]
        while sample.heard is None and time.time() < sample.sent + timeout:
            time.sleep(0.01)
            sample.heard = self.viewer.first_loud_after(sample.sent)
        if sample.heard is None:
            sample.notes.append(f"no speech heard within {timeout:.0f} s")
        self._explain(sample, accepted, n_requests)
        return sample

    def _explain(self, sample: Sample, accepted: dict, n_requests: int) -> None:
        """The breakdown: the stub's clock, the jobs' and the publisher's events."""
        reply = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = next((m for m in self.messages() if m.get("reply_to") == sample.message_id), None)
            if reply and reply.get("sentences"):
                break
            time.sleep(0.1)
        if reply is None:
            user = next((m for m in self.messages() if m["id"] == sample.message_id), {})
            sample.notes.append(f"no reply (message status {user.get('status')}, error {user.get('error')})")
            return
        sample.responder, sample.reply_status = reply.get("responder"), reply.get("status")
        if reply.get("fallback"):
            sample.notes.append(f"fell back to the script: {reply['fallback']}")
        requests = [q for q in self.stub.requests[n_requests:] if q.received_at >= sample.sent]
        if requests:
            sample.llm_request, sample.llm_first_sentence = requests[0].received_at, requests[0].first_sentence_at
        elif sample.responder == "llm":
            sample.notes.append("the LLM stub got no request")
        if accepted.get("asr_job_id"):
            sample.asr_done = _when(self.client.get(f"/v1/jobs/{accepted['asr_job_id']}").json(), "ended_at")
        if self.feed is not None:
            deadline = time.monotonic() + 5
            while sample.first_sentence_queued is None and time.monotonic() < deadline:
                for e in self.feed.snapshot():
                    if e.get("message") != reply["id"]:
                        continue
                    if e["event"] == "reply_start" and sample.reply_start is None:
                        sample.reply_start = e["t"]
                    if e["event"] == "reply_sentence" and e.get("index") == 0 and sample.first_sentence_queued is None:
                        sample.first_sentence_queued = e["t"]
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while sample.speech_start is None and time.monotonic() < deadline:
            events = self.client.get(f"/v1/rooms/{self.rid}/events").json()
            starts = [e for e in events if e.get("event") == "speech_start" and e.get("message") == reply["id"]
                      and not e.get("replay")]
            if starts:
                sample.speech_start = min(e["t"] for e in starts)
            else:
                time.sleep(0.1)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "min": None, "max": None}
    return {"p50": round(float(np.percentile(values, 50)), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


def _p50(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.percentile(values, 50)), 3) if values else None


def summarise(samples: list[Sample]) -> dict:
    heard = [s.latency for s in samples if s.latency is not None]
    out = {"messages": len(samples), "measured": len(heard),
           "post_to_first_speech_heard_s": _stats(heard),
           "each_s": [round(s.latency, 3) if s.latency is not None else None for s in samples],
           "breakdown_p50_s": {
               "post_to_reply_start_event": _p50([s.since_post(s.reply_start) for s in samples]),
               "post_to_llm_request": _p50([s.since_post(s.llm_request) for s in samples]),
               "post_to_llm_first_sentence_sent": _p50([s.since_post(s.llm_first_sentence) for s in samples]),
               "post_to_first_sentence_queued_event": _p50([s.since_post(s.first_sentence_queued)
                                                             for s in samples]),
               "post_to_speech_start_event": _p50([s.since_post(s.speech_start) for s in samples]),
               "speech_start_event_to_heard": _p50([s.heard - s.speech_start for s in samples
                                                    if s.heard is not None and s.speech_start is not None]),
           },
           "responders": sorted({s.responder or "none" for s in samples})}
    if any(s.asr_done for s in samples):
        out["breakdown_p50_s"] = {"post_to_asr_done": _p50([s.since_post(s.asr_done) for s in samples]),
                                  **out["breakdown_p50_s"]}
    notes = [f"{s.kind} #{i}: {n}" for i, s in enumerate(samples) for n in s.notes]
    if notes:
        out["notes"] = notes
    return out


class Feed(threading.Thread):
    """The room's WebSocket feed (reply_start, reply_sentence, ...; the per-frame mouth events are
    skipped), for the breakdown: each event's `t` is the service's wall time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        from websockets.sync.client import connect  # installed with uvicorn[standard]

        self.ws = connect(url, open_timeout=10, max_size=None)
        self.events: list[dict] = []

    def run(self) -> None:
        try:
            for raw in self.ws:
                event = json.loads(raw)
                if event.get("event") != "mouth":
                    self.events.append(event)
        except Exception:  # closed: the breakdown just lacks what came after
            return

    def snapshot(self) -> list[dict]:
        return list(self.events)

    def stop(self) -> None:
        self.ws.close()


def open_feed(base_url: str, room_id: str) -> Feed | None:
    url = base_url.replace("http", "ws", 1).rstrip("/") + f"/v1/rooms/{room_id}/ws"
    try:
        feed = Feed(url)
    except Exception as exc:
        log(f"no WebSocket feed at {url} ({exc}); the breakdown lacks the reply events")
        return None
    feed.start()
    return feed


def check_endpoints(client: httpx.Client) -> None:
    try:
        spec = client.get("/openapi.json").json()
    except (httpx.HTTPError, ValueError) as exc:
        raise NotReady(f"cannot read {client.base_url}/openapi.json: {exc}") from exc
    paths = spec.get("paths", {})
    if not any(p.startswith("/v1/rooms/") and p.endswith("/messages") and "post" in ops for p, ops in paths.items()):
        raise NotReady(f"the fleet at {client.base_url} has no POST /v1/rooms/{{id}}/messages: conversations "
                       "(issue 9) are not in this build yet")


def speak_questions(client: httpx.Client, texts: list[str]) -> list[tuple[str, float]]:
    """(file ref, seconds) of each question, spoken by the service's own TTS (not timed)."""
    jobs = []
    for text in texts:
        r = client.post("/v1/tts", json={"text": text, "language": "zh"})
        r.raise_for_status()
        jobs.append(r.json()["job_id"])
    out = []
    for job_id in jobs:
        deadline = time.monotonic() + 180
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("finished", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"TTS job {job_id}")
            time.sleep(0.1)
        if job["status"] != "finished":
            raise RuntimeError(f"TTS of a question failed: {job.get('error')}")
        out.append((job["result"]["file"], float(job["result"].get("duration_s") or 0)))
    return out


def run(client: httpx.Client, stub: LlmStub, args) -> dict:
    check_endpoints(client)
    spoken = SPOKEN[: args.audio_messages + (1 if args.warmup else 0)]
    questions = speak_questions(client, spoken) if args.audio_messages else []
    body = {"avatar_id": args.avatar, "username": "convlatency", "responder": args.responder, "language": "zh"}
    r = client.post("/v1/rooms", json=body)
    if r.status_code != 201:
        raise NotReady(f"POST /v1/rooms with responder={args.responder} answered {r.status_code}: {r.text[:300]}")
    room = r.json()
    viewer = feed = None
    try:
        viewer = wait_on_air(client, room)
        feed = open_feed(str(client.base_url), room["id"])
        conv = Conversation(client, stub, room, viewer, feed)
        log(f"room {room['id']} on air; warm-up")
        warmup = [conv.send("warmup text", {"text": "你好，我准备好了。"}) for _ in range(args.warmup)]
        if questions and args.warmup:
            warmup.append(conv.send("warmup audio", {"audio": questions.pop(0)[0]}, timeout=30))
        if args.responder == "llm" and not stub.requests:
            raise NotReady(f"the room answered without asking the LLM stub at {stub.url}: the fleet's "
                           f"MTL_LLM_URL must point there ({'; '.join(warmup[0].notes) if warmup else ''})")
        text = []
        for i in range(args.messages):
            texts = FAQ_QUESTIONS if args.responder == "faq" else ANSWERS
            text.append(conv.send("text", {"text": texts[i % len(texts)]}))
            log(f"text {i + 1}/{args.messages}: {_fmt(text[-1].latency)} s")
        audio = []
        for i, (ref, _dur) in enumerate(questions):
            audio.append(conv.send("audio", {"audio": ref}, timeout=30))
            log(f"audio {i + 1}/{len(questions)}: {_fmt(audio[-1].latency)} s")
        conv.wait_finished()
        llm = [q for q in stub.requests if q.stream]
        return {
            "room_responder": room.get("responder"),
            "llm_stub": {"first_token_s": args.first_token, "first_sentence_s": args.first_sentence,
                         "token_delay_s": args.token_delay, "requests": len(stub.requests),
                         "measured_first_sentence_s_p50": _p50([q.first_sentence_at - q.received_at for q in llm
                                                                if q.first_sentence_at]),
                         "abandoned_streams": sum(1 for q in stub.requests if q.disconnected_at)},
            "warmup": {s.kind.split()[1]: round(s.latency, 3) if s.latency is not None else None for s in warmup},
            "text": summarise(text),
            "audio": {**summarise(audio), "question_audio_s": [round(d, 2) for _, d in questions]},
        }
    finally:
        if viewer is not None:
            viewer.stop()
        if feed is not None:
            feed.stop()
        client.delete(f"/v1/rooms/{room['id']}")


def wait_on_air(client: httpx.Client, room: dict, timeout: float = 60) -> AudioViewer:
    """Once the room publishes, a viewer of its RTMP stream that hears it."""
    deadline = time.monotonic() + timeout
    while not (state := client.get(f"/v1/rooms/{room['id']}").json()).get("publishing"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the room did not go on air in {timeout:.0f} s: {state.get('dark_reason')}")
        time.sleep(0.2)
    return attach_viewer(room["urls"]["rtmp"])


def attach_viewer(url: str, timeout: float = 30) -> AudioViewer:
    """A viewer that gets audio; one that connected too early (the stream just starting) is replaced."""
    deadline = time.monotonic() + timeout
    while True:
        viewer = AudioViewer(url)
        viewer.start()
        while viewer.is_alive() and not viewer.levels and time.monotonic() < deadline:
            time.sleep(0.1)
        if viewer.levels:
            return viewer
        viewer.stop()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no viewer could pull audio from {url} in {timeout:.0f} s")
        time.sleep(0.5)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running fleet (default: start one)")
    parser.add_argument("--stub-port", type=int, default=8931, help="with --url: where the fleet's MTL_LLM_URL points")
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--audio-messages", type=int, default=5, help=f"at most {len(SPOKEN) - 1}")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--avatar", default="demo")
    parser.add_argument("--responder", choices=("llm", "faq", "script"), default="llm",
                        help="the room's responder (faq: questions about the sample product sheet; "
                             "use --audio-messages 0 with faq or script)")
    parser.add_argument("--first-token", type=float, default=0.25)
    parser.add_argument("--first-sentence", type=float, default=0.3)
    parser.add_argument("--token-delay", type=float, default=0.05)
    parser.add_argument("--env", action="append", default=[], metavar="MTL_X=V", help="extra setting for the own fleet")
    parser.add_argument("--keep-logs", action="store_true", help="keep the own fleet's data dir")
    args = parser.parse_args()
    args.audio_messages = min(args.audio_messages, len(SPOKEN) - 1)
    total = 2 * args.warmup + args.messages + args.audio_messages
    stub = LlmStub(replies(max(total, 1), shuffle=args.url is not None), first_delay_s=args.first_token,
                   first_sentence_s=args.first_sentence, token_delay_s=args.token_delay,
                   port=0 if args.url is None else args.stub_port)
    fleet = None
    load_start = os.getloadavg()
    try:
        if args.url is None:
            fleet = OwnFleet.start(stub.url, dict(kv.split("=", 1) for kv in args.env))
        url = args.url or fleet.url
        with httpx.Client(base_url=url, timeout=60) as client:
            figures = run(client, stub, args)
        load_end = os.getloadavg()
        text = figures["text"]["post_to_first_speech_heard_s"]["p50"]
        emit("conversation_latency", {
            "fleet": "own (make run layout, free ports)" if fleet else url,
            **figures,
            "target_text_p50_s": 1.5,
            "text_meets_target": text is not None and text <= 1.5,
            "load_avg_1m": {"start": round(load_start[0], 2), "end": round(load_end[0], 2)},
        })
    except NotReady as exc:
        log(str(exc))
        raise SystemExit(2) from None
    finally:
        if fleet is not None:
            log("fleet: stopping")
            fleet.stop(keep=args.keep_logs)
        stub.stop()


if __name__ == "__main__":
    main()
