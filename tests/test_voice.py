"""Talking to a room (issue 18): its live audio input WS /v1/rooms/{id}/audio.

An in-process API (the real app under uvicorn, on a free port) with the session's real redis-server:
speech made by Piper in this process is streamed at the pace it is spoken; Silero VAD cuts it, the
bundled Whisper model recognises it, and the text becomes a room message as a typed one would. No
worker is needed: the message's turn is queued for a converse worker that these tests do not run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from redis import Redis
from websockets.exceptions import InvalidStatus

from api.server import config
from bench.textmetrics import cer
from bench.voice_client import RATE, VoiceClient, to_pcm16k
from conftest import ROOT, free_port, wait_until
from core import metrics
from core.conversations.store import ConversationStore
from core.rooms import RoomStore
from core.settings import Settings

QUESTION = "What skills does this job need?"


@pytest.fixture(scope="module")
def voice_api(redis_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("voice-data")
    settings = Settings(redis_url=redis_server.url(7), data_dir=data_dir, models_dir=ROOT / "models",
                        access_mode="open", voice_idle_timeout_s=1.5, voice_speaker_ttl_s=6, max_open_rooms=50)
    with serving(settings) as api:
        yield api


@contextmanager
def serving(settings: Settings, keep_data: bool = False):
    """The app in this process on a free port, with a Redis client and room store on its settings; the
    Redis database is emptied afterwards unless `keep_data` (a database a fleet also uses)."""
    from api.main import create_app

    port = free_port()
    # create_app points this process's metrics at its data dir; the fleets that tests start later
    # inherit this process's environment and must keep their own.
    had_metrics_dir = metrics.ENV in os.environ
    app = create_app(settings)
    if not had_metrics_dir:
        os.environ.pop(metrics.ENV, None)
    server = uvicorn.Server(config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, what="the in-process API")
    redis = Redis.from_url(settings.redis_url)
    try:
        yield VoiceApi(f"ws://127.0.0.1:{port}", settings, redis, RoomStore(redis, settings), app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if not keep_data:
            redis.flushdb()


class VoiceApi:
    def __init__(self, base: str, settings: Settings, redis: Redis, store: RoomStore, app: FastAPI) -> None:
        self.base, self.settings, self.redis, self.store, self.app = base, settings, redis, store, app

    def room(self, **kw):
        return self.store.create(username="voice", language="en", **kw)

    def client(self, room_id: str, query: str = "") -> VoiceClient:
        return VoiceClient(f"{self.base}/v1/rooms/{room_id}/audio{query}")


@contextmanager
def connected(voice_api, room=None):
    room = room or voice_api.room()
    client = voice_api.client(room.id)
    try:
        yield room, client
    finally:
        client.close()


@lru_cache(maxsize=4)
def spoken(text: str) -> np.ndarray:
    """Piper's English voice, at 16 kHz, with silence before and after."""
    from models.tts import PiperEngine

    audio, rate = PiperEngine().synthesize(text, None, "en")
    pcm = to_pcm16k(audio * 0.6, rate)
    quiet = np.zeros(int(0.4 * RATE), "<i2")
    return np.concatenate([quiet, pcm, quiet, quiet])


def test_speech_is_endpointed_recognised_and_posted_as_a_message(voice_api):
    files_before = {p for p in voice_api.settings.data_dir.rglob("*") if p.is_file()}
    with connected(voice_api) as (room, client):
        assert client.wait_event("listening", 10)["end_silence_ms"] == 500
        client.send_pcm(spoken(QUESTION))
        final = client.wait_event("final", 30)
        assert final is not None, client.events
    names = [e["event"] for e in client.events if e.get("speaker") == "user"]
    assert names.index("speech_start") < names.index("speech_end") < names.index("final")
    end = next(e for e in client.events if e["event"] == "speech_end")
    assert end["reason"] == "silence" and 1.0 < end["duration_s"] < 3.5, end
    assert cer(final["text"].lower(), QUESTION.lower()) <= 0.25, final
    assert final["message_id"], final
    # The room's conversation has it as a user message, like a typed one (its feed said so too).
    messages = ConversationStore(voice_api.redis, voice_api.settings).messages(room.id)
    assert [(m["role"], m["source"], m["text"]) for m in messages] == [("user", "voice", final["text"])]
    assert any(e.get("event") == "user_text" and e.get("source") == "voice" and "id" in e for e in client.events)
    # Audio lived in memory only.
    assert {p for p in voice_api.settings.data_dir.rglob("*") if p.is_file()} == files_before


def test_speech_interrupts_a_speaking_room_unless_barge_in_is_off(voice_api):
    """While the user is still speaking (before any final text): the room stops only if barge_in is on.
    Its final text is a message, which then interrupts either room, as a typed one does."""
    for barge_in in (True, False):
        room = voice_api.room(barge_in=barge_in)
        voice_api.store.say(room, tts_job_id="x" * 32)  # the room has something to say
        gen = voice_api.store.generation(room.id)
        with connected(voice_api, room) as (_room, client):
            threading.Thread(target=client.send_pcm, args=(spoken(QUESTION),), daemon=True).start()
            assert client.wait_event("speech_start", 10) is not None, client.events
            interrupted = client.wait_event("barge_in", 0.5)
            assert client.wait_event("speech_end", 0) is None  # still speaking
            state = voice_api.store.generation(room.id), voice_api.store.pending_count(room.id)
            assert client.wait_event("final", 30)["message_id"]
        if barge_in:
            assert interrupted is not None, client.events
            assert state == (gen + 1, 0)
            assert [e["reason"] for e in voice_api.store.events(room.id) if e["event"] == "interrupt_requested"] == \
                ["voice", "message"]
        else:
            assert interrupted is None and state == (gen, 1)


@pytest.mark.parametrize("frame, error", [(b"\x01" * 7, "bad_frame"), (b"\x00" * 64000, "bad_frame"),
                                          ("hello", "bad_control"), ('{"type": "shout"}', "bad_control")])
def test_garbage_frames_close_the_socket_with_4400(voice_api, frame, error):
    with connected(voice_api) as (room, client):
        client.wait_event("listening", 10)
        client.ws.send(frame)
        assert client.wait_closed(5) == 4400
    assert client.wait_event("error", 0)["code"] == error


def test_audio_faster_than_twice_real_time_is_refused(voice_api):
    with connected(voice_api) as (room, client):
        client.send_pcm(np.zeros(5 * RATE, "<i2"), frame_ms=100, speed=10)
        assert client.wait_closed(5) == 4429
    assert client.wait_event("error", 0)["code"] == "too_fast"
    with connected(voice_api, room) as (_room, client):  # twice real time is allowed
        client.send_pcm(np.zeros(3 * RATE, "<i2"), frame_ms=100, speed=1.9)
        time.sleep(0.3)
        assert client.close_code is None


def test_a_client_that_stops_sending_without_end_is_closed_and_its_words_still_count(voice_api):
    with connected(voice_api) as (room, client):
        pcm = spoken(QUESTION)
        client.send_pcm(pcm[: int(0.4 * RATE) + int(1.6 * RATE)])  # speech, cut off mid-sentence, then nothing
        started = time.monotonic()
        assert client.wait_closed(15) == 4408
        assert time.monotonic() - started < 1.5 + 10
    assert client.wait_event("error", 0)["code"] == "idle_timeout"
    assert client.wait_event("speech_end", 0)["reason"] == "idle"
    assert client.wait_event("final", 0)["text"]


def test_end_then_silence_keeps_the_socket_open(voice_api):
    with connected(voice_api) as (room, client):
        client.send_pcm(spoken(QUESTION)[: int(2.0 * RATE)])
        client.send_json({"type": "end"})
        final = client.wait_event("final", 30)
        assert final is not None and final["text"], client.events
        assert client.wait_event("speech_end", 0)["reason"] == "end"
        time.sleep(2.5)  # past the idle timeout: after `end`, a quiet client is no idle one
        assert client.close_code is None


def test_a_room_closed_mid_utterance_ends_the_socket(voice_api):
    with connected(voice_api) as (room, client):
        pcm = spoken(QUESTION)
        sender = threading.Thread(target=client.send_pcm, args=(np.concatenate([pcm, pcm]),), daemon=True)
        sender.start()
        assert client.wait_event("speech_start", 10) is not None
        voice_api.store.close(room.id)
        assert client.wait_closed(5) == 1000
        assert client.wait_event("room_closed", 0) is not None


def test_one_speaker_per_room(voice_api):
    with connected(voice_api) as (room, first):
        first.wait_event("listening", 10)
        with connected(voice_api, room) as (_room, second):
            assert second.wait_closed(5) == 4409
            assert second.wait_event("error", 0)["code"] == "speaker_busy"
    # Once the first has gone, the room takes a new speaker.
    third = wait_until(lambda: _listening(voice_api, room.id), 5, what="a new speaker socket")
    third.close()


def test_a_dropped_socket_releases_the_speaker_claim(voice_api):
    """A speaker whose connection drops mid-utterance (no `end`, no close frame: the network went away)
    leaves the room at once: a second speaker gets in well before the claim's TTL would free it."""
    room = voice_api.room()
    first = voice_api.client(room.id)
    assert first.wait_event("listening", 10) is not None
    first.send_pcm(spoken(QUESTION)[: int(1.2 * RATE)])  # speaking, then gone
    assert first.wait_event("speech_start", 10) is not None
    dropped = time.monotonic()
    first.ws.socket.shutdown(socket.SHUT_RDWR)  # the TCP connection ends without a WebSocket close
    first.close()
    second = wait_until(lambda: _listening(voice_api, room.id), voice_api.settings.voice_speaker_ttl_s - 1,
                        interval=0.2, what="a second speaker after the first dropped")
    try:
        assert time.monotonic() - dropped < voice_api.settings.voice_speaker_ttl_s - 1
        assert second.close_code is None
    finally:
        second.close()


def test_recordings_are_kept_only_when_the_room_asks(voice_api):
    """keep_recordings: each utterance is a 16 kHz WAV under uploads/, named by the final event and the
    message, owned by the speaker; a room without it writes nothing (the first test checks that too)."""
    from core.files import FileOwners
    from core.media import read_wav

    room = voice_api.room(keep_recordings=True)
    with connected(voice_api, room) as (_room, client):
        client.send_pcm(spoken(QUESTION))
        final = client.wait_event("final", 30)
    assert final is not None and final["message_id"], client.events
    ref = final["recording"]
    path = voice_api.settings.data_dir / ref
    audio, rate = read_wav(path)
    assert ref.startswith("uploads/") and rate == RATE
    assert abs(audio.size / rate - final["audio_s"]) < 0.05, (audio.size / rate, final)
    assert cer(_recognise(audio).lower(), QUESTION.lower()) <= 0.25  # it is the question, not noise
    message = ConversationStore(voice_api.redis, voice_api.settings).get(room.id, final["message_id"])
    assert message.audio == ref and message.source == "voice"
    assert FileOwners(voice_api.redis).owner_of(path) is None  # open access: the speaker has no key
    before = {p for p in voice_api.settings.data_dir.rglob("*") if p.is_file()}
    with connected(voice_api) as (_room, client):  # a room without the option
        client.send_pcm(spoken(QUESTION))
        final = client.wait_event("final", 30)
    assert final is not None and "recording" not in final
    assert {p for p in voice_api.settings.data_dir.rglob("*") if p.is_file()} == before


def _recognise(audio: np.ndarray) -> str:
    from core.voice import _decode

    return _decode(Settings(models_dir=ROOT / "models"), audio, "en").text


def test_the_publisher_is_woken_when_its_room_has_something_new(voice_api):
    """An utterance queued and an interrupt are published on the room's wake channel (and the TTS
    worker publishes there when a room's speech is written): the stream publisher takes them at its
    next frame instead of its next poll."""
    from core.rooms import wake_channel, wake_room

    room = voice_api.room()
    pubsub = voice_api.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(wake_channel(room.id))
    try:
        wait_until(lambda: voice_api.redis.pubsub_numsub(wake_channel(room.id))[0][1] == 1, 5, what="subscribed")
        voice_api.store.say(room, tts_job_id="x" * 32)
        voice_api.store.barge_in(room.id, "voice")
        wake_room(voice_api.redis, room.id)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                got.append(message["data"].decode())
        assert got == ["say", "interrupt", "speech"]
    finally:
        pubsub.close()


@contextmanager
def end_silence(voice_api, ms: int):
    """A longer end of turn for this test (the app reads the same settings object)."""
    before = voice_api.settings.voice_end_silence_ms
    voice_api.settings.voice_end_silence_ms = ms
    try:
        yield
    finally:
        voice_api.settings.voice_end_silence_ms = before


def _hold_key(room_id: str) -> str:
    from core.rooms import room_key

    return room_key(room_id, "hold")


def test_the_turn_is_posted_at_the_pause_and_its_reply_held_until_the_endpoint(voice_api):
    """The pause's text becomes the message while the silence lasts (its reply can be generated and
    synthesised meanwhile), but the room plays nothing new until the silence is the end of the turn."""
    with end_silence(voice_api, 5000), connected(voice_api) as (room, client):  # time to decode, even loaded
        client.wait_event("listening", 10)
        sender = threading.Thread(target=client.send_pcm, args=(np.concatenate([spoken(QUESTION),
                                                                                np.zeros(6 * RATE, "<i2")]),))
        sender.start()
        posted = client.wait(lambda e: e.get("event") == "user_text" and "id" in e, 20)
        assert posted is not None and client.wait_event("speech_end", 0) is None, client.events  # before the endpoint
        assert voice_api.redis.exists(_hold_key(room.id))  # held: a publisher would take nothing now
        assert voice_api.store.take_utterance(room.id) is None
        final = client.wait_event("final", 20)
        sender.join()
    assert final["preempted"] is True and final["message_id"] == posted["message"], (final, posted)
    assert cer(final["text"].lower(), QUESTION.lower()) <= 0.25, final
    assert not voice_api.redis.exists(_hold_key(room.id))  # released at the endpoint
    messages = ConversationStore(voice_api.redis, voice_api.settings).messages(room.id)
    assert [(m["role"], m["text"]) for m in messages] == [("user", final["text"])]


def test_speech_resuming_after_the_pause_takes_the_posted_turn_back(voice_api):
    """The speaker pauses (the turn is posted), then goes on: that turn is taken back, and the whole
    utterance becomes one message."""
    second = "How many people are on the team?"
    rest = np.concatenate([spoken(second), np.zeros(6 * RATE, "<i2")])  # made before streaming: no gap
    with end_silence(voice_api, 5000), connected(voice_api) as (room, client):
        client.wait_event("listening", 10)
        client.send_pcm(spoken(QUESTION))
        deadline = time.monotonic() + 4.0  # silence until the pause's turn is posted (within the 5 s turn end)
        while client.wait(lambda e: e.get("event") == "user_text" and "id" in e, 0) is None \
                and time.monotonic() < deadline:
            client.send_pcm(np.zeros(int(0.1 * RATE), "<i2"))
        first = client.wait(lambda e: e.get("event") == "user_text" and "id" in e, 0)
        assert first is not None and client.wait_event("speech_end", 0) is None, client.events
        client.send_pcm(rest)
        retracted = client.wait_event("retracted", 10)
        final = client.wait_event("final", 10)
    assert retracted is not None and final is not None, " ".join(f"{e['event']}:{e.get('text') or e.get('message') or ''}" for e in client.events)
    assert retracted["message_id"] == first["message"] and final["message_id"] != first["message"]
    assert cer(final["text"].lower(), f"{QUESTION} {second}".lower()) <= 0.3, final
    # The history has the whole utterance once; the feed said the first was taken back.
    messages = ConversationStore(voice_api.redis, voice_api.settings).messages(room.id)
    assert [(m["role"], m["text"]) for m in messages] == [("user", final["text"])]
    assert any(e.get("event") == "message_retracted" and e.get("message") == first["message"] for e in client.events)
    assert not voice_api.redis.exists(_hold_key(room.id))


def test_a_reply_starts_with_a_clause_whose_speech_is_cached_ahead():
    """A reply's first piece ends at its first comma (its speech is synthesised from a clause); the
    script's and the faq's fixed openings, cut the same way, are what the TTS worker caches at start,
    so the first piece of every script reply is among them."""
    from core.conversations.responders import ACKS, FAQ_LEADS, OPENING, opening_phrases
    from core.conversations.sentences import SentenceCutter

    def cut(text: str, first: int = 2) -> list[str]:
        cutter = SentenceCutter(first_clause_chars=first)
        return [p for ch in text for p in cutter.push(ch)] + cutter.flush()

    assert cut("好的，谢谢你的回答。这个问题，我们最后再聊。") == ["好的，", "谢谢你的回答。", "这个问题，我们最后再聊。"]
    assert cut("Sure, it costs 3,000 yuan. Anything else?") == ["Sure,", "it costs 3,000 yuan.", "Anything else?"]
    assert cut("嗯，好的。") == ["嗯，好的。"]  # one character is no clause worth its own speech
    assert cut("好的，谢谢你的回答。", first=0) == ["好的，谢谢你的回答。"]
    cached = set(opening_phrases(2))
    for language in ("zh", "en"):
        sep = " " if language == "en" else ""
        for lead in (OPENING[language], *ACKS[language], *FAQ_LEADS[language]):
            assert (cut(lead + sep + "Next question?")[0], language) in cached, lead


def _listening(voice_api, room_id: str) -> VoiceClient | None:
    client = voice_api.client(room_id)
    if client.wait_event("listening", 5) is not None:
        return client
    client.close()
    return None


def test_unknown_room_is_refused_at_the_handshake(voice_api):
    with pytest.raises(InvalidStatus):
        voice_api.client("0" * 32)


def test_the_feed_socket_follows_the_room_until_it_closes(voice_api):
    """The feed shares its access check and reader with the audio socket (api/sockets.py)."""
    room = voice_api.room()
    feed = VoiceClient(f"{voice_api.base}/v1/rooms/{room.id}/ws")
    try:
        assert feed.wait_event("hello", 10)["room_id"] == room.id
        voice_api.store.event(room.id, "note", text="hi")
        assert feed.wait_event("note", 5)["text"] == "hi"
        voice_api.store.close(room.id)
        assert feed.wait_closed(5) == 1000
        assert feed.wait_event("room_closed", 0) is not None
    finally:
        feed.close()


def test_the_audio_socket_is_described_in_the_openapi_document(voice_api):
    import httpx

    spec = httpx.get(voice_api.base.replace("ws", "http", 1) + "/openapi.json").json()
    text = spec["info"]["description"]
    assert "/v1/rooms/{room_ref}/audio" in text and "PCM s16le mono 16 kHz" in text and "4409" in text
    assert spec["components"]["schemas"]["RoomCreate"]["properties"]["barge_in"]["default"] is True


# ---- the console's microphone, in a real Chromium with a fake microphone playing a question ----

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_console_microphone_asks_the_room_and_the_reply_plays(api, service, tmp_path):
    from selenium.webdriver.support.select import Select

    from bench.browser import chromium, console_errors, find_browser
    from speech import wav_bytes

    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    # Chromium plays the file as its microphone, in a loop: the question, then a long silence.
    question = tmp_path / "question.wav"
    pcm = np.concatenate([spoken(QUESTION), np.zeros(10 * RATE, "<i2")])
    question.write_bytes(wav_bytes(pcm, RATE))
    d = chromium(extra_args=("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                             f"--use-file-for-fake-audio-capture={question}"))
    try:
        d.get(f"{api.base_url}/console/#rooms")
        wait_until(lambda: d.execute_script("return !!(window.mtlConsole && window.mtlMic)"), 15, what="the console")
        d.find_element("id", "room-username").send_keys("mic_room")
        Select(d.find_element("id", "room-language")).select_by_value("en")
        d.find_element("css selector", "#room-form button[type=submit]").click()
        room = wait_until(lambda: d.execute_script("return window.mtlConsole.room"), 15, what="the new room")
        wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json().get("publishing"), 90, interval=0.5,
                   what="the room on air (a loaded machine takes a while)")
        wait_until(lambda: d.execute_script("const v = document.querySelector('#live-video');"
                                            "return v.videoWidth > 0 && v.currentTime > 1.0"), 40, what="the live video")
        d.find_element("id", "mic-hands-free").click()
        final = final_transcript(d)
        d.find_element("id", "mic-hands-free").click()  # off before the file loops
        assert cer(final["text"].lower(), QUESTION.lower()) <= 0.25, final
        heard_from = d.execute_script("return Date.now()")
        rows = wait_until(lambda: (t := d.execute_script(
            "return [...document.querySelectorAll('#conversation li')].map(li => li.className + '|' + li.innerText)"))
            and any("assistant spoken" in r for r in t) and t, 60, interval=0.3, what="the reply, spoken")
        assert any("user" in r and final["text"][:12] in r for r in rows), rows
        assert d.execute_script("return window.mtlConsole.meter.maxSince(arguments[0])", heard_from) > 0.03
        assert "You:" in d.find_element("id", "mic-transcript").text
        screenshot(d, "console-microphone.png")
        assert not [e for e in console_errors(d) if "favicon" not in e], console_errors(d)
    finally:
        d.quit()


def final_transcript(d, timeout: float = 60) -> dict:
    """The microphone's first final transcript in the page (window.mtlMic.events); on a timeout the
    events it did get say where the turn stopped. The file loops every ~13 s; a loaded machine decodes
    slowly."""
    try:
        return wait_until(lambda: next((e for e in d.execute_script("return window.mtlMic.events")
                                        if e["event"] == "final"), None), timeout, interval=0.2,
                          what="a final transcript")
    except AssertionError as exc:
        events = d.execute_script("return window.mtlMic.events")
        raise AssertionError(f"{exc}; the microphone's events: {[e.get('event') for e in events][-40:]}; "
                             f"last: {events[-3:]}") from None

# ---- the audience page's microphone (watch.html), with the room's access rules ----

KEY_A, KEY_B = "voice-tenant-a-0123456789", "voice-tenant-b-0123456789"


@pytest.fixture(scope="module")
def keyed_voice_api(redis_server, tmp_path_factory):
    """The in-process API with API keys on (tenants A and B): rooms of A's, no workers."""
    settings = Settings(redis_url=redis_server.url(8), data_dir=tmp_path_factory.mktemp("voice-keys"),
                        models_dir=ROOT / "models", api_keys=[KEY_A, KEY_B], max_open_rooms=50,
                        rate_limit_enabled=False)
    with serving(settings) as api:
        yield api


def fake_microphone(tmp_path: Path, silence_s: float = 10.0) -> tuple[str, ...]:
    """Chromium switches that make the question (then silence, in a loop) its microphone."""
    from speech import wav_bytes

    question = tmp_path / "question.wav"
    question.write_bytes(wav_bytes(np.concatenate([spoken(QUESTION), np.zeros(int(silence_s * RATE), "<i2")]), RATE))
    return ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={question}")


def screenshot(d, name: str) -> None:
    artifacts = Path(os.environ.get("MTL_TEST_ARTIFACTS", ROOT / "results" / "test-artifacts")) / "console"
    artifacts.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(artifacts / name))


def mic_line(d) -> str:
    return d.find_element("id", "mic-transcript").text


@pytest.mark.timeout(240)
def test_watch_page_microphone_asks_for_the_key_and_is_heard(keyed_voice_api, tmp_path):
    """A viewer of A's room: without a key the microphone is refused and the page asks for one; B's key
    is refused (another key's room); A's key is heard: the level meter moves, the partial and the final
    transcript show, and the room gets the message. In Chinese, the controls say so in Chinese."""
    from api.access import key_owner
    from bench.browser import chromium, console_errors, find_browser

    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    api = keyed_voice_api
    room = api.store.create(username="watch_mic", language="en", owner=key_owner(KEY_A))
    page = api.base.replace("ws", "http", 1) + f"/console/watch.html?key={room.stream_key}&lang=en"
    d = chromium(extra_args=fake_microphone(tmp_path))
    try:
        d.get(page)
        wait_until(lambda: d.execute_script("return !!(window.mtlMic && document.getElementById('mic-hold'))"), 15,
                   what="the watch page's microphone")
        assert d.find_element("id", "mic-hold").text == "Hold to talk"
        free = d.find_element("id", "mic-hands-free")
        free.click()
        wait_until(lambda: d.execute_script("return window.mtlMic.error") == "key_needed", 15, what="the refusal")
        assert "API key" in mic_line(d) and d.find_element("id", "mic-key-form").is_displayed()
        assert not free.is_selected()  # hands-free went off with the refused socket
        for key, outcome in ((KEY_B, "unknown_room"), (KEY_A, None)):
            d.find_element("id", "mic-key").clear()
            d.find_element("id", "mic-key").send_keys(key)
            d.find_element("css selector", "#mic-key-form button").click()
            d.execute_script("window.mtlMic.error = ''")
            free.click()
            if outcome:
                wait_until(lambda: d.execute_script("return window.mtlMic.error") == outcome, 15, what="B refused")
                assert "closed" in mic_line(d) and d.find_element("id", "mic-key-form").is_displayed()
        # The fake microphone's file has been looping since the first click: the first utterance heard
        # may be the question's end; the next whole one is within one loop (question + 10 s).
        final = wait_until(lambda: next((e for e in d.execute_script("return window.mtlMic.events")
                                         if e["event"] == "final" and cer(e["text"].lower(), QUESTION.lower()) <= 0.25),
                                        None), 60, interval=0.2, what="the question's final transcript")
        free.click()
        names = [e["event"] for e in d.execute_script("return window.mtlMic.events")]
        assert names[0] == "listening" and "speech_start" in names, names
        assert mic_line(d).startswith("You: ") and final["text"][:10] in mic_line(d)
        assert d.execute_script("return window.mtlMic.peak") > 0.02  # the meter showed the voice
        assert d.find_element("id", "mic-meter").is_displayed()
        message = ConversationStore(api.redis, api.settings).get(room.id, final["message_id"])
        assert message.source == "voice" and message.text == final["text"]
        d.get(page.replace("lang=en", "lang=zh"))
        wait_until(lambda: d.execute_script("return !!document.getElementById('mic-hold')"), 15, what="zh page")
        assert d.find_element("id", "mic-hold").text == "按住说话"
        screenshot(d, "watch-microphone-zh.png")
        # Expected: the refused handshakes, the room's GET that said why, the stream that is not on air here.
        errors = [e for e in console_errors(d) if not any(s in e for s in ("favicon", "/live/", "WebSocket", "/v1/rooms/"))]
        assert not errors, errors
    finally:
        d.quit()


def test_the_microphone_speaks_the_console_languages():
    """Every string mic.js shows is in both catalogues (i18n/en.js and zh.js), the Chinese one translated."""
    import re

    static = ROOT / "api" / "static" / "console"
    source = (static / "mic.js").read_text()
    used = set(re.findall(r'"(mic\.[a-z_.]+)"', source))
    used |= {f"mic.refused.{k}" for k in ("key_needed", "unknown_room", "refused")}
    used |= {f"mic.error.{k}" for k in re.search(r"\[(\"speaker_busy\"[^\]]*)\]", source).group(1).replace('"', "")
             .replace(" ", "").split(",")}
    catalogue = {lang: dict(re.findall(r'"(mic\.[a-z_.]+)":\s*"([^"]*)"', (static / "i18n" / f"{lang}.js").read_text()))
                 for lang in ("en", "zh")}
    assert used and used <= set(catalogue["en"]) and set(catalogue["en"]) == set(catalogue["zh"]), \
        (used - set(catalogue["en"]), set(catalogue["en"]) ^ set(catalogue["zh"]))
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in catalogue["zh"].values())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_watch_page_microphone_asks_the_room_and_the_reply_plays(api, service, tmp_path):
    """A viewer on the audience page (the fleet, open access): one click on hands-free turns the page's
    sound on and the microphone; the question is recognised and the room's reply is heard in the page."""
    from bench.browser import chromium, console_errors, find_browser

    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    r = api.post("/v1/rooms", json={"username": "watch_mic_room", "language": "en", "ttl_s": 600})
    assert r.status_code == 201, r.text
    room = r.json()
    d = chromium(autoplay_sound=False, extra_args=fake_microphone(tmp_path))
    try:
        wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json().get("publishing"), 90, interval=0.5,
                   what="the room on air (a loaded machine takes a while)")
        d.get(f"{api.base_url}/console/watch.html?key={room['stream_key']}&lang=en")
        wait_until(lambda: d.execute_script("const w = window.watch.flv; return !!w && w.video.currentTime > 1.0"),
                   40, interval=0.3, what="the room playing in the audience page")
        d.find_element("id", "mic-hands-free").click()
        final = final_transcript(d)
        d.find_element("id", "mic-hands-free").click()  # off before the file loops
        assert cer(final["text"].lower(), QUESTION.lower()) <= 0.25, final
        assert final["message_id"]
        heard_from = d.execute_script("return Date.now()")
        assert d.execute_script("return window.audience.unmuted") is True  # the same click turned the sound on
        wait_until(lambda: d.execute_script("return window.watch.flv.meter.maxSince(arguments[0])", heard_from) > 0.03,
                   60, interval=0.3, what="the reply heard in the page")
        replies = [m for m in api.get(f"/v1/rooms/{room['id']}/messages").json() if m.get("reply_to") == final["message_id"]]
        assert replies and replies[0]["role"] == "assistant", replies
        assert d.find_element("id", "mic-transcript").text.startswith("You: ")
        screenshot(d, "watch-microphone-reply.png")
        assert not [e for e in console_errors(d) if "favicon" not in e], console_errors(d)
    finally:
        d.quit()
        api.delete(f"/v1/rooms/{room['id']}")


def test_the_pause_takes_the_partial_begun_as_its_silence_began(voice_api):
    """A partial is begun as soon as silence follows speech; when no voiced audio comes before the
    pause, that decode is the utterance's text: the same speech is not decoded a second time."""
    before = voice_api.settings.voice_partial_interval_s
    # No partial while the question is spoken (it is shorter than that), one as its silence begins.
    voice_api.settings.voice_partial_interval_s = 2.4
    try:
        with connected(voice_api) as (room, client):
            client.wait_event("listening", 10)
            client.send_pcm(spoken(QUESTION))
            final = client.wait_event("final", 30)
    finally:
        voice_api.settings.voice_partial_interval_s = before
    assert final is not None and final["early_from"] == "partial", final
    assert final["decodes"] == {"silence_partial": 1, "reused": 1}, final["decodes"]
    assert cer(final["text"].lower(), QUESTION.lower()) <= 0.25, final


def test_a_silence_partial_waits_behind_a_slow_partial_and_the_pause_takes_it(voice_api):
    """Under load a partial may still be decoding when the speaker stops: the silence's decode is
    queued behind it on the partials' thread (not decoded beside it at the pause), and the pause
    takes that decode as the utterance's text."""
    import core.voice

    release = threading.Event()
    # The partials' thread is busy (as with a partial that takes a second under load) until the
    # question has been spoken and its turn has ended.
    blocker = core.voice._PARTIALS.submit(release.wait, 20)
    try:
        with connected(voice_api) as (room, client):
            client.wait_event("listening", 10)
            client.send_pcm(spoken(QUESTION))
            ended = client.wait_event("speech_end", 10)
            release.set()
            final = client.wait_event("final", 30)
    finally:
        release.set()
        blocker.result(5)
    assert ended is not None and final is not None, client.events
    assert final["early_from"] == "partial" and "pause" not in final["decodes"], final
    assert final["decodes"]["reused"] == 1 and final["decodes"]["partial"] >= 1, final["decodes"]
    assert cer(final["text"].lower(), QUESTION.lower()) <= 0.25, final

