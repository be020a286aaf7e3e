"""Voice latency (issue 18): from the last voiced sample of a spoken question to the first reply speech a
viewer of the room's RTMP stream hears, the question streamed live into WS /v1/rooms/{id}/audio.

    python -m bench.voice_latency [--questions 5] [--barge-ins 3] [--responder script|llm]
    python -m bench.voice_latency --url http://127.0.0.1:8181   # a running fleet (script responder)

Questions are spoken by the service's own TTS (zh: the Mandarin voice, en: Piper), not timed. For each
language a room (script responder by default; `--responder llm`: bench/llmstub.py, whose first sentence
is complete 300 ms after the request, a different Mandarin reply each turn; zh only) goes on air, a
viewer pulls its RTMP stream (the room_latency viewer: low-latency ffmpeg, 20 ms RMS windows, speech =
first window above 0.02) and a client streams 16 kHz PCM in 40 ms frames at the pace it is spoken, each
frame sent once its last sample is "spoken", like a microphone: 0.5 s of silence, the question, then
silence until the reply is heard (a hands-free client never stops sending). Each question waits until
the previous reply is finished (room idle, 1 s of silence heard); a warm-up question per room is not
counted.

The split (p50, seconds after the last voiced sample): `speech_end` event received (endpointing),
`final` received (recognition), `posted` (the message answered was posted: at the pause, before the
endpoint, when its reply was prepared during the silence), `reply_start` (its turn began),
`first_text` (the responder's first text), `reply_sentence` 0 (the first reply piece cut and queued),
`tts_started`/`tts_ended` (its speech synthesised), `taken` (the publisher took it), the publisher's
`speech_start` (its speech begins in the stream), heard (the total).

Barge-in: right after a reply is heard, another question is streamed while the room still speaks;
from its first voiced sample: the server's `speech_start` (VAD), the publisher's `interrupted` event
(wall time, and on the stream clock: its `stream_ts` against the session's t0), and the viewer hearing
silence (RMS < 0.01 for 100 ms).
"""

from __future__ import annotations

import argparse
import io
import os
import threading
import time
import wave
from datetime import datetime

import httpx
import numpy as np

from bench.common import emit
from bench.conversation_latency import (Conversation, NotReady, OwnFleet, _p50, _stats, log, replies,
                                        wait_on_air)
from bench.llmstub import LlmStub
from bench.textmetrics import cer
from bench.voice_client import RATE, VoiceClient, last_voiced_s, to_pcm16k

QUESTIONS = {
    "zh": ["请问这个岗位平时主要做哪些工作？", "我想了解一下团队现在有多少人。", "这个职位需要经常出差吗？",
           "公司对新员工有什么培训安排？", "请问面试一共有几轮？", "这个岗位最看重哪方面的能力？",
           "我可以先介绍一下我自己吗？"],
    "en": ["What does a normal day in this job look like?", "How many people are on the team right now?",
           "Does this position need a lot of travel?", "What training do new people get here?",
           "How many interview rounds are there?", "Which skill matters most for this role?",
           "Can I tell you a little about myself first?"],
}
LEAD_S = 0.5


def first_voiced_s(pcm: np.ndarray, threshold: float = 0.02) -> float:
    n = int(0.02 * RATE)
    x = pcm.astype(np.float32) / 32768
    frames = x[: x.size - x.size % n].reshape(-1, n)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > threshold)
    return loud[0] * 0.02 if loud.size else 0.0


def speak(client: httpx.Client, text: str, language: str) -> np.ndarray:
    """A question as 16 kHz int16 PCM, by the service's TTS."""
    r = client.post("/v1/tts", json={"text": text, "language": language})
    r.raise_for_status()
    job_id, deadline = r.json()["job_id"], time.monotonic() + 180
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("finished", "failed"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"TTS job {job_id}")
        time.sleep(0.1)
    if job["status"] != "finished":
        raise RuntimeError(f"TTS failed: {job.get('error')}")
    with wave.open(io.BytesIO(client.get(job["result"]["url"]).content)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        return to_pcm16k(pcm, w.getframerate())


class Talker:
    """One hands-free speaker on a room's audio socket: a question, then silence until told to stop."""

    def __init__(self, voice: VoiceClient) -> None:
        self.voice = voice
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def say(self, pcm: np.ndarray) -> float:
        """Starts streaming; returns the wall time the question's stream began (sample 0)."""
        self.voice.started = None
        self.voice.sent_s = 0.0
        self.stop.clear()
        stream = np.concatenate([np.zeros(int(LEAD_S * RATE), "<i2"), pcm])
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()
        while self.voice.started_wall is None:
            time.sleep(0.001)
        return self.voice.started_wall

    def _run(self, stream: np.ndarray) -> None:
        self.voice.send_pcm(stream)
        silence = np.zeros(int(0.2 * RATE), "<i2")
        while not self.stop.is_set() and self.voice.close_code is None:
            self.voice.send_pcm(silence)

    def quiet(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.voice.send_json({"type": "end"})  # a pause between streams, not an idle client


def _feed_event(voice: VoiceClient, name: str, timeout: float = 5, **match) -> dict | None:
    return voice.wait(lambda e: e.get("event") == name and "id" in e and
                      all(e.get(k) == v for k, v in match.items()), timeout)


def ask(voice: VoiceClient, talker: Talker, viewer, pcm: np.ndarray, n_before: int,
        client: httpx.Client | None = None) -> dict:
    """One question: the split after its last voiced sample (wall clock; the fleet is on this machine)."""
    start = talker.say(pcm)
    last = start + LEAD_S + last_voiced_s(pcm)
    final = voice.wait(lambda e: e.get("event") == "final" and e.get("utterance", 0) > n_before, 20)
    heard = None
    deadline = time.time() + 20
    while heard is None and time.time() < deadline:
        heard = viewer.first_loud_after(last)
        time.sleep(0.01)
    talker.quiet()
    out = {"text": final.get("text") if final else None, "heard": None if heard is None else heard - last}
    if final is None:
        return {**out, "note": "no final text"}
    end = voice.wait_event("speech_end", 0, utterance=final["utterance"])
    posted = _feed_event(voice, "user_message", 0, message=final.get("message_id"))
    reply = _feed_event(voice, "reply_start", reply_to=final.get("message_id"))
    first_text = _feed_event(voice, "reply_delta", 0, message=reply["message"]) if reply else None
    sentence = _feed_event(voice, "reply_sentence", message=reply["message"], index=0) if reply else None
    speech = _feed_event(voice, "speech_start", message=reply["message"]) if reply else None
    out.update(early_from=final.get("early_from"), decodes=final.get("decodes"))
    out.update(endpoint=end["_wall"] - last, final=final["_wall"] - last, recognise_s=final.get("recognise_s"),
               final_after_endpoint_server_s=final.get("after_endpoint_s"), early=final.get("early"),
               reply_sentence=sentence["t"] - last if sentence else None,
               speech_start=speech["t"] - last if speech else None,
               taken=speech["taken_at"] - last if speech and speech.get("taken_at") else None,
               posted=posted["t"] - last if posted else None, reply_start=reply["t"] - last if reply else None,
               first_text=first_text["t"] - last if first_text else None)
    if sentence and sentence.get("tts_job_id"):
        out.update(_tts_times(client, sentence["tts_job_id"], last))
    return out


def _tts_times(client: httpx.Client | None, job_id: str, last: float) -> dict:
    """When the first sentence's TTS job started and ended (after the last voiced sample), and whether
    its speech came from the cache."""
    if client is None:
        return {}
    job = client.get(f"/v1/jobs/{job_id}").json()

    def at(field: str) -> float | None:
        value = job.get(field)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - last if value else None
    return {"tts_started": at("started_at"), "tts_ended": at("ended_at"),
            "tts_cached": (job.get("result") or {}).get("cached")}


def barge(voice: VoiceClient, talker: Talker, viewer, pcm: np.ndarray, n_before: int) -> dict:
    """A question streamed while the room speaks: how fast its speech stops."""
    start = talker.say(pcm)
    first = start + LEAD_S + first_voiced_s(pcm)
    detected = voice.wait(lambda e: e.get("event") == "speech_start" and e.get("speaker") == "user"
                          and e.get("utterance", 0) > n_before, 10)
    cut = voice.wait(lambda e: e.get("event") == "interrupted" and "id" in e and e["t"] > first - 0.5, 5)
    silent = _quiet_after(viewer, first, 8)
    # Its own answer must be under way before the next question waits for a quiet room.
    final = voice.wait(lambda e: e.get("event") == "final" and e.get("utterance", 0) > n_before, 20)
    if final and final.get("message_id"):
        _feed_event(voice, "reply_start", timeout=10, reply_to=final["message_id"])
    talker.quiet()
    out = {"detected": detected["_wall"] - first if detected else None,
           "barge_in_event": bool(voice.wait_event("barge_in", 0, utterance=detected["utterance"])) if detected else False,
           "interrupted": cut["t"] - first if cut else None, "heard_silent": silent - first if silent else None}
    if cut:
        out["interrupted_stream_clock"] = _stream_delay(voice, first, cut)
        out["interrupted_stream_clock_after_detect"] = _stream_delay(voice, detected["t"], cut) if detected else None
    return out


def _stream_delay(voice: VoiceClient, wall: float, cut: dict) -> float | None:
    """Stream-clock time from `wall` to the interrupt: the stream clock at `wall` is read from the last
    `mouth` event sent before it (its first frame's stream time at its wall time), so a stream clock
    that drifts from the wall clock over the session does not count."""
    mouths = [e for e in list(voice.events) if e.get("event") == "mouth" and e.get("frames") and e["t"] <= wall]
    if not mouths:
        return None
    ref = mouths[-1]
    return cut["stream_ts"] - (ref["frames"][0]["t"] + (wall - ref["t"]))


def _quiet_after(viewer, t: float, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        levels = [(a, rms) for a, rms in list(viewer.levels) if a >= t]
        for i in range(len(levels) - 5):
            if all(rms < 0.01 for _, rms in levels[i:i + 5]):
                return levels[i][0]
        time.sleep(0.05)
    return None


def run_room(client: httpx.Client, language: str, texts: list[str], questions: list[np.ndarray], args) -> dict:
    body = {"avatar_id": args.avatar, "username": "voicelatency", "responder": args.responder, "language": language}
    r = client.post("/v1/rooms", json=body)
    if r.status_code != 201:
        raise NotReady(f"POST /v1/rooms answered {r.status_code}: {r.text[:300]}")
    room = r.json()
    viewer = voice = None
    try:
        viewer = wait_on_air(client, room)
        ws = str(client.base_url).replace("http", "ws", 1).rstrip("/") + f"/v1/rooms/{room['id']}/audio"
        voice = VoiceClient(ws)
        talker, conv = Talker(voice), Conversation(client, None, room, viewer, None)
        samples, barges = [], []
        for i, pcm in enumerate(questions):
            conv.wait_finished()
            samples.append(ask(voice, talker, viewer, pcm, _utterances(voice), client))
            samples[-1]["cer"] = cer(texts[i], samples[-1]["text"] or "")
            log(f"{language} question {i}: heard {samples[-1]['heard']} ({samples[-1]['text']})")
            if i >= 1 and len(barges) < args.barge_ins:  # the room now speaks its reply: talk over it
                time.sleep(0.3)
                barges.append(barge(voice, talker, viewer, questions[(i + 1) % len(questions)], _utterances(voice)))
                log(f"{language} barge-in: {barges[-1]}")
        conv.wait_finished()
        return {"warmup": samples[0], "questions": summarise(samples[1:]), "barge_in": summarise_barge(barges)}
    finally:
        if voice is not None:
            voice.close()
        if viewer is not None:
            viewer.stop()
        client.delete(f"/v1/rooms/{room['id']}")


def _utterances(voice: VoiceClient) -> int:
    return max([e.get("utterance", 0) for e in list(voice.events) if e.get("speaker") == "user"] or [0])


SPLIT = ("endpoint", "final", "posted", "reply_start", "first_text", "reply_sentence", "tts_started", "tts_ended",
         "taken", "speech_start", "heard")


def summarise(samples: list[dict]) -> dict:
    heard = [s["heard"] for s in samples if s.get("heard") is not None]
    return {"measured": len(heard), "of": len(samples), "last_voiced_to_heard_s": _stats(heard),
            "split_p50_s": {k: _p50([s.get(k) for s in samples]) for k in SPLIT},
            "final_after_endpoint_server_p50_s": _p50([s.get("final_after_endpoint_server_s") for s in samples]),
            "recognise_s_p50": _p50([s.get("recognise_s") for s in samples]),
            "cer_mean": round(float(np.mean([s["cer"] for s in samples])), 3) if samples else None,
            "early_final": sum(1 for s in samples if s.get("early")),
            "early_from_partial": sum(1 for s in samples if s.get("early_from") == "partial"),
            "decodes": {k: sum((s.get("decodes") or {}).get(k, 0) for s in samples)
                        for k in ("partial", "silence_partial", "pause", "reused", "endpoint")},
            "each": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()} for s in samples]}


def summarise_barge(barges: list[dict]) -> dict:
    keys = ("detected", "interrupted", "interrupted_stream_clock", "interrupted_stream_clock_after_detect",
            "heard_silent")
    return {"n": len(barges), "p50_s": {k: _p50([b.get(k) for b in barges]) for k in keys},
            "max_s": {k: max([round(b[k], 3) for b in barges if b.get(k) is not None] or [None]) for k in keys},
            "interrupted": sum(1 for b in barges if b.get("interrupted") is not None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running fleet (default: start one)")
    parser.add_argument("--questions", type=int, default=5, help="measured per language (one warm-up more)")
    parser.add_argument("--barge-ins", type=int, default=3, help="per language")
    parser.add_argument("--languages", default="zh,en")
    parser.add_argument("--responder", choices=("script", "llm"), default="script")
    parser.add_argument("--avatar", default="demo")
    parser.add_argument("--env", action="append", default=[], metavar="MTL_X=V", help="extra setting for the own fleet")
    args = parser.parse_args()
    if args.responder == "llm" and args.languages != "zh":
        log("the LLM stub answers in Mandarin: measuring the zh room only")
        args.languages = "zh"
    # Different replies every turn (the TTS cache would speak a repeated one at once).
    stub = LlmStub(replies(4 * (args.questions + args.barge_ins + 2)), first_delay_s=0.25, first_sentence_s=0.3,
                   token_delay_s=0.05)
    fleet, load_start = None, os.getloadavg()
    try:
        if args.url is None:
            fleet = OwnFleet.start(stub.url, dict(kv.split("=", 1) for kv in args.env))
        with httpx.Client(base_url=args.url or fleet.url, timeout=60) as client:
            figures = {}
            for language in args.languages.split(","):
                texts = QUESTIONS[language][: args.questions + 1]
                figures[language] = run_room(client, language, texts, [speak(client, t, language) for t in texts], args)
        every = [s for f in figures.values() for s in f["questions"]["each"]]
        emit("voice_latency", {"fleet": "own (make run layout, free ports)" if fleet else args.url,
                               "responder": args.responder, **({"llm_stub_first_sentence_s": 0.3}
                                                                if args.responder == "llm" else {}),
                               "all_languages": summarise(every) | {"each": None}, **figures,
                               "target_p50_s": 1.5 if args.responder == "llm" else 1.2, "target_p95_s": 1.6,
                               "load_avg_1m": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}})
    except NotReady as exc:
        log(str(exc))
        raise SystemExit(2) from None
    finally:
        if fleet is not None:
            fleet.stop()
        stub.stop()


if __name__ == "__main__":
    main()
