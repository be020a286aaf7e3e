"""A voice turn taken back, as the console shows it (issue 18), in a real headless Chromium.

The speaker pauses: the pause's text is posted as a message (while the silence lasts) and a real
`converse` worker answers it; the speaker goes on: that turn is retracted (`message_retracted` in the
feed). The console's conversation must drop the message and its reply, and show the whole utterance
once. The in-process API (tests/test_voice.py `serving`) and the session's redis-server; the one worker
this needs; no stream or TTS worker (the reply is generated, not spoken).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.voice_client import RATE
from conftest import ROOT, Fleet, fleet_env, headless_browser, wait_until
from core.conversations.store import ConversationStore, MessageStatus
from core.jobs import Kind, alive_workers, get_queue
from core.settings import Settings
from test_voice import QUESTION, screenshot, serving, spoken

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def rows(d) -> list[dict]:
    """The console's conversation as a person reads it: each row's role and status, and its text."""
    return d.execute_script("""return [...document.querySelectorAll('#conversation li')].map(li => ({
        cls: li.className, text: li.querySelector('.text').innerText}))""")


def shot(d, name: str) -> None:
    d.execute_script("document.querySelector('#conversation').scrollIntoView({block: 'center'})")
    screenshot(d, name)


def said(shown: list[dict], role: str) -> list[str]:
    return [r["text"] for r in shown if r["cls"].startswith(f"msg {role}")]


def test_the_console_drops_a_voice_turn_taken_back(redis_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("retract-data")
    # A long end of turn: the pause's turn is posted and answered long before the silence would end it.
    settings = Settings(redis_url=redis_server.url(12), data_dir=data_dir, models_dir=ROOT / "models",
                        access_mode="open", voice_end_silence_ms=5000, max_open_rooms=50)
    fleet = Fleet(env=fleet_env(settings.redis_url, data_dir), log_dir=tmp_path_factory.mktemp("retract-logs"))
    fleet.worker("converse")
    second = "How many people are on the team?"
    rest = np.concatenate([spoken(second), np.zeros(int(0.3 * RATE), "<i2")])
    try:
        with serving(settings) as api, headless_browser() as d:
            queue = get_queue(Kind.converse, api.redis)
            wait_until(lambda: alive_workers(api.redis, queue), 60, interval=0.3, what="the converse worker")
            room = api.room(responder="script")
            d.get(f"{api.base.replace('ws://', 'http://')}/console/?lang=en#rooms/{room.id}")
            wait_until(lambda: d.execute_script("const r = window.mtlConsole && window.mtlConsole.room;"
                                                "return r ? r.id : null") == room.id, 30,
                       what="the room in the console")
            client = api.client(room.id)
            try:
                assert client.wait_event("listening", 10)
                client.send_pcm(spoken(QUESTION))
                first, shown = None, []
                deadline = time.monotonic() + 4.3  # within the 5 s end of turn
                # Silence (as a microphone sends it) until the console shows the pause's turn and its reply.
                while time.monotonic() < deadline:
                    client.send_pcm(np.zeros(int(0.1 * RATE), "<i2"))
                    first = first or client.wait(lambda e: e.get("event") == "user_text" and "id" in e, 0)
                    shown = rows(d)
                    if first and said(shown, "assistant"):
                        break
                assert first is not None and client.wait_event("speech_end", 0) is None, client.events
                assert said(shown, "user") == [first["text"].strip()] and len(said(shown, "assistant")) == 1, shown
                shot(d, "console-before-retract.png")
                client.send_pcm(rest)  # the speaker goes on: the turn posted at the pause is taken back
                client.send_json({"type": "end"})
                retracted = client.wait_event("retracted", 15)
                final = client.wait_event("final", 30)
            finally:
                client.close()
            assert retracted is not None and final is not None and final.get("message_id"), client.events
            assert retracted["message_id"] == first["message"]

            def settled():  # the whole utterance once, answered once: nothing of the turn taken back
                now = rows(d)
                done = said(now, "user") == [final["text"].strip()] and len(said(now, "assistant")) == 1
                return now if done else None
            try:
                wait_until(settled, 30, interval=0.2, what="the console without the turn taken back")
            finally:
                shot(d, "console-after-retract.png")
            # The turn of the message taken back may have been past its checks when it was retracted
            # (a loaded converse worker): its reply is then added late, as here, and the feed says so.
            conv = ConversationStore(api.redis, settings)
            posted = client.wait(lambda e: e.get("event") == "user_message"
                                 and e.get("message") == first["message"], 0)
            late = conv.add(room.id, "assistant", posted["turn"], reply_to=first["message"], responder="script",
                            status=MessageStatus.GENERATING, sentences=[], generated="A late reply.", language="en")
            api.store.event(room.id, "reply_start", feed_only=True, message=late.id, reply_to=first["message"],
                            responder="script")
            time.sleep(1.0)  # the console redraws on that event (within 200 ms)
            assert settled(), rows(d)
            listed = conv.messages(room.id)
            assert first["message"] not in {m["id"] for m in listed} | {m.get("reply_to") for m in listed}, listed
    finally:
        fleet.stop()


def test_a_reply_to_a_turn_taken_back_is_never_played(redis_server, tmp_path_factory):
    """The pause's turn is answered while the silence lasts (held), then the speaker goes on: none of
    that reply's sentences is ever given to the room's publisher, only the reply to the whole
    utterance; and the history keeps neither the turn taken back nor its reply."""
    data_dir = tmp_path_factory.mktemp("retract-play-data")
    settings = Settings(redis_url=redis_server.url(13), data_dir=data_dir, models_dir=ROOT / "models",
                        access_mode="open", voice_end_silence_ms=5000, max_open_rooms=50)
    fleet = Fleet(env=fleet_env(settings.redis_url, data_dir), log_dir=tmp_path_factory.mktemp("retract-play-logs"))
    fleet.worker("converse")
    rest = np.concatenate([spoken("How many people are on the team?"), np.zeros(int(0.3 * RATE), "<i2")])
    try:
        with serving(settings) as api:
            wait_until(lambda: alive_workers(api.redis, get_queue(Kind.converse, api.redis)), 60, interval=0.3,
                       what="the converse worker")
            room = api.room(responder="script")
            conv = ConversationStore(api.redis, settings)
            client = api.client(room.id)
            try:
                assert client.wait_event("listening", 10)
                client.send_pcm(spoken(QUESTION))
                first, queued = None, 0
                deadline = time.monotonic() + 4.3  # within the 5 s end of turn
                while time.monotonic() < deadline and not queued:  # silence until the held reply is queued
                    client.send_pcm(np.zeros(int(0.1 * RATE), "<i2"))
                    first = first or client.wait(lambda e: e.get("event") == "user_text" and "id" in e, 0)
                    queued = api.store.queue_state(room.id)[0]
                assert first is not None and queued and client.wait_event("speech_end", 0) is None, client.events
                assert api.store.take_utterance(room.id) is None  # held while the turn may go on
                taken_back = next(m["id"] for m in conv.messages(room.id) if m.get("reply_to") == first["message"])
                client.send_pcm(rest)
                client.send_json({"type": "end"})
                assert client.wait_event("retracted", 15) is not None, client.events
                final = client.wait_event("final", 30)
                assert final is not None and final.get("message_id"), client.events
                reply = client.wait(lambda e: e.get("event") == "reply_end" and "id" in e
                                    and e.get("message") != taken_back, 30)
            finally:
                client.close()
            assert reply is not None and reply["status"] == "complete", reply
            played = []
            while (taken := api.store.take_utterance(room.id)) is not None:  # what a publisher would play
                played.append(taken.utterance.message_id)
                api.store.ack_utterance(room.id, taken)
            assert played and set(played) == {reply["message"]}, (played, taken_back)
            listed = conv.messages(room.id)
            assert [m["text"] for m in listed if m["role"] == "user"] == [final["text"]], listed
            assert not {first["message"], taken_back} & {m["id"] for m in listed}, listed
    finally:
        fleet.stop()
