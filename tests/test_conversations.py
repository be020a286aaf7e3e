"""Conversations (issue 9) against the real fleet: messages in, replies spoken in the live stream.

The `llm` responder talks to bench/llmstub.py (an OpenAI-compatible streaming server started for
the session, see conftest.py); the `script` responder needs nothing. Viewers pull the room's RTMP
stream with ffmpeg and what they heard is checked with the service's own ASR.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from bench.viewer import AudioViewer
from conftest import poll_job, wait_until
from core.interviews.bank import ordered_questions
from speech import tone_wav, tts_pcm, wav_bytes
from test_rooms import events, open_room, publishing, wait_event
from textmetrics import cer

pytestmark = pytest.mark.slow


def said(api, room_id: str) -> list[dict]:
    r = api.get(f"/v1/rooms/{room_id}/messages")
    assert r.status_code == 200, r.text
    return r.json()


def post(api, room_id: str, **body) -> dict:
    r = api.post(f"/v1/rooms/{room_id}/messages", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def live_room(api, service, **body) -> dict:
    room = open_room(api, **body)
    wait_until(lambda: publishing(service.media, room["stream_key"]), 30, what="the room to publish")
    return room


def reply_to(api, room_id: str, message_id: str, status: set[str], timeout: float = 60) -> dict:
    def find():
        for m in said(api, room_id):
            if m.get("reply_to") == message_id and m["status"] in status:
                return m
        return None

    return wait_until(find, timeout, interval=0.2, what=f"a reply to {message_id} ({', '.join(sorted(status))})")


def transcribe_pcm(api, pcm: np.ndarray, language: str = "zh") -> str:
    up = api.post("/v1/files", files={"file": ("heard.wav", wav_bytes(pcm * 32767, 16000), "audio/wav")})
    assert up.status_code == 201, up.text
    r = api.post("/v1/asr", data={"source": up.json()["file"], "language": language})
    job = poll_job(api, r.json()["job_id"], timeout=120)
    assert job["status"] == "finished", job
    return job["result"]["text"]


def session_t0(api, room_id: str) -> float:
    return [e for e in events(api, room_id) if e["event"] == "session_start"][-1]["t0"]


# ---- input that is refused before any work ----

def test_bad_messages_get_clear_errors_and_the_room_keeps_streaming(api, service):
    room = live_room(api, service, username="conv_bad")
    rid = room["id"]
    for body, code in (({"text": "   "}, "empty_text"), ({"text": "话" * 501}, "text_too_long"),
                       ({"text": "hi", "audio": "tests/x.wav"}, "invalid_input"), ({}, "empty_text")):
        r = api.post(f"/v1/rooms/{rid}/messages", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, (body, r.text)
    r = api.post(f"/v1/rooms/{rid}/messages", files={"file": ("q.wav", b"RIFF....not audio at all", "audio/wav")})
    assert r.status_code == 422 and r.json()["error"]["code"].startswith("undecodable"), r.text
    r = api.post(f"/v1/rooms/{rid}/messages", json={"audio": "../../etc/passwd"})
    assert r.status_code in (404, 422), r.text
    assert said(api, rid) == [], "a refused message must leave no trace"
    # Valid audio without speech: accepted, then reported, and nothing is answered.
    up = api.post(f"/v1/rooms/{rid}/messages", files={"file": ("tone.wav", tone_wav(2.0), "audio/wav")})
    assert up.status_code == 202 and up.json()["status"] == "transcribing", up.text
    failed = wait_event(api, rid, "message_failed", 60)
    assert failed["code"] == "no_speech" and failed["message"] == up.json()["message_id"]
    [message] = said(api, rid)
    assert message["status"] == "failed" and message["error"]["code"] == "no_speech"
    assert api.get(f"/v1/rooms/{rid}").json()["state"] == "idle"
    assert publishing(service.media, room["stream_key"])
    # A closed room answers 404; its transcript stays readable by id.
    assert api.delete(f"/v1/rooms/{rid}").status_code == 204
    r = api.post(f"/v1/rooms/{rid}/messages", json={"text": "还在吗？"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_room"
    assert [m["id"] for m in said(api, rid)] == [message["id"]]


class Feed(threading.Thread):
    """A front-end following the room's WebSocket feed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.ws = ws_connect(url, open_timeout=10)
        self.events: list[dict] = []

    def run(self) -> None:
        try:
            for raw in self.ws:
                self.events.append(json.loads(raw))
        except ConnectionClosed:
            pass

    def wait_for(self, pred, timeout: float, what: str) -> dict:
        return wait_until(lambda: next((e for e in list(self.events) if pred(e)), None), timeout, interval=0.05,
                          what=what)

    def close(self) -> None:
        self.ws.close()


def feed_url(api, room_id: str, since: str | None = None) -> str:
    base = str(api.base_url).rstrip("/").replace("http", "ws", 1)
    return f"{base}/v1/rooms/{room_id}/ws" + (f"?since={since}" if since else "")


def test_script_room_welcomes_answers_and_feeds_a_front_end_in_order(api, service):
    room = open_room(api, username="conv_script", job="软件工程师", welcome="欢迎来到直播间，我是今天的面试官。")
    feed = Feed(feed_url(api, room["id"]))
    feed.start()
    assert feed.wait_for(lambda e: e["event"] == "hello", 10, "hello")["room_id"] == room["id"]
    welcome = said(api, room["id"])[0]
    assert welcome["source"] == "welcome"
    # The welcome is spoken once the stream is up, then the room answers a typed message.
    feed.wait_for(lambda e: e["event"] == "speech_end" and e.get("message") == welcome["id"]
                  and e.get("sentence") == len(welcome["sentences"]) - 1, 60, "the welcome to be spoken")
    sent = post(api, room["id"], text="你好，我准备好了。")
    reply = reply_to(api, room["id"], sent["message_id"], {"spoken"}, 60)
    questions = ordered_questions("软件工程师", "zh")[1]
    assert reply["responder"] == "script" and reply["text"].endswith(questions[0]), reply
    assert [s["status"] for s in reply["sentences"]] == ["spoken"] * len(reply["sentences"])
    time.sleep(0.5)
    feed.close()
    mine = [e for e in feed.events if e.get("message") in (sent["message_id"], reply["id"])
            or (e["event"] == "mouth" and e["utterance"] in {s["utterance"] for s in reply["sentences"]})]
    kinds = [e["event"] for e in mine]
    # In order: what the user said, the reply's text as generated, then its speech on the stream clock.
    assert kinds.index("user_text") < kinds.index("reply_start") < kinds.index("reply_delta") \
        < kinds.index("reply_sentence") < kinds.index("speech_start"), kinds
    assert kinds.count("speech_start") == kinds.count("speech_end") == len(reply["sentences"]), kinds
    ids = [tuple(int(p) for p in e["id"].split("-")) for e in feed.events if "id" in e]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Mouth values: one per video frame of each sentence, on the stream clock between its start and end.
    for i, sentence in enumerate(reply["sentences"]):
        start = next(e for e in mine if e["event"] == "speech_start" and e["sentence"] == i)
        end = next(e for e in mine if e["event"] == "speech_end" and e["sentence"] == i)
        frames = [f for e in mine if e["event"] == "mouth" and e["utterance"] == sentence["utterance"] for f in e["frames"]]
        t = np.array([f["t"] for f in frames])
        assert abs(t[0] - start["stream_ts"]) < 1e-6 and abs(t[-1] - end["stream_ts"]) < 1e-6, (start, end, t[:3], t[-3:])
        assert np.allclose(np.diff(t), 1 / 25, atol=1e-3), "one value per frame at 25 fps"
        opening = np.array([f["open"] for f in frames])
        assert opening.max() > 0.3 and (opening < 0.1).mean() > 0.05, "the mouth opens and closes with the speech"
    # A front-end that reconnects resumes where it left off.
    user_text = next(e for e in mine if e["event"] == "user_text")
    again = Feed(feed_url(api, room["id"], since=user_text["id"]))
    again.start()
    again.wait_for(lambda e: e["event"] == "reply_end" and e["message"] == reply["id"], 10, "the replayed feed")
    again.close()
    assert [e["event"] for e in again.events if e.get("message") == reply["id"]][:2] == ["reply_start", "reply_delta"]
