"""Typed records behind their stores, against a real redis-server: what a store writes it reads back
as the same record, records written before they were typed still read, and the small registries
keep their rules (first owner stays, one tenant's cycle label never moves another's)."""

from __future__ import annotations

import json

import pytest
from redis import Redis


@pytest.fixture
def redis(redis_server):
    conn = Redis.from_url(redis_server.url(5))
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture
def rooms(redis, tmp_path):
    from core.rooms import RoomStore
    from core.settings import Settings

    return RoomStore(redis, Settings(_env_file=None, redis_url="redis://unused", data_dir=tmp_path, max_open_rooms=10))


def test_utterances_round_trip_and_old_ones_still_read(rooms, redis):
    from core import keys
    from core.rooms import Utterance

    room = rooms.create(username="stores")
    said = rooms.say(room, tts_job_id="t" * 32, message_id="m1", sentence=2)
    assert isinstance(said, Utterance) and rooms.pending(room.id) == [said]
    # As queued before utterances were typed: explicit nulls, and a field this version does not know.
    old = {"id": "o" * 32, "queued_at": 1.5, "audio": "tts/x.wav", "tts_job_id": None, "duration_s": 1.0,
           "from_the_future": True}
    redis.rpush(keys.room(room.id, "utterances"), json.dumps(old))
    taken = rooms.take_utterance(room.id)
    assert taken.utterance == said and taken.from_playing is False
    assert rooms.take_utterance(room.id).raw == taken.raw  # still first until acknowledged
    rooms.ack_utterance(room.id, taken)
    again = rooms.take_utterance(room.id).utterance
    assert (again.id, again.audio, again.duration_s, again.tts_job_id) == ("o" * 32, "tts/x.wav", 1.0, None)


def test_interview_records_round_trip(redis, tmp_path):
    from core.interviews.store import Clip, Interview

    clip = Clip(name="n_0", text="Why?", audio="tts/n_0.wav", video="lipsync/n_0.mp4", tts_job_id="a", index=0)
    record = Interview(id="i" * 32, room_id="r" * 32, zbjname="u*x", username="u", job="dev", language="en",
                       count=1, avatar_id="demo", generator={"used": "bank"}, questions=[clip], created_at=2.0)
    assert Interview.loads(record.dumps()) == record
    # A question stored before clips were typed (no stock fields) reads with their defaults.
    old = json.loads(record.dumps())
    old["questions"] = [{"index": 0, "text": "Why?", "name": "n_0", "tts_job_id": "a", "lipsync_job_id": None,
                         "audio": "tts/n_0.wav", "video": "lipsync/n_0.mp4"}]
    assert Interview.loads(json.dumps(old)).questions == [clip]


def test_avatar_registry_keeps_the_first_owner(redis):
    from core.registry import AvatarRegistry

    reg = AvatarRegistry(redis)
    reg.claim("av-1", "owner-a")
    reg.claim("av-1", "owner-b")  # re-preparing keeps the owner
    reg.note_job("av-1", "job-1", ttl_s=60)
    assert reg.get("av-1") == reg.get("av-1").__class__("av-1", "owner-a", "job-1")
    assert reg.owners() == {"av-1": "owner-a"}
    assert reg.forget("av-1") is True and reg.get("av-1").owner is None and reg.forget("av-1") is False


def test_cycle_positions_are_per_owner(redis):
    from core.registry import CyclePositions

    cycles = CyclePositions(redis)
    cycles.set("demo", "owner-a", "room-a", 17)
    assert cycles.get("demo", "owner-a", "room-a") == 17
    assert cycles.get("demo", "owner-b", "room-a") == 0  # B's label of the same name is its own


def test_messages_round_trip_and_read_as_clients_see_them(rooms, redis):
    from core import keys
    from core.conversations.store import ConversationStore, Message, MessageStatus, mark_said
    from core.rooms import UtteranceStatus

    room = rooms.create(username="stores")
    conv = ConversationStore(redis, rooms.settings)
    asked = conv.add(room.id, "user", 0, text="Hi?", source="text", status=MessageStatus.RECEIVED)
    reply = conv.add(room.id, "assistant", 0, reply_to=asked.id, status=MessageStatus.GENERATING, sentences=[],
                     generated="", language="en")
    assert isinstance(asked, Message) and conv.get(room.id, asked.id) == asked
    said = rooms.say(room, tts_job_id="t" * 32, message_id=reply.id, sentence=0)
    reply.sentences.append({"text": "Hello.", "utterance": said.id, "tts_job_id": "t" * 32})
    reply.status = MessageStatus.COMPLETE
    conv.save(room.id, reply)
    mark_said(redis, rooms.settings, room.id, said, UtteranceStatus.SPOKEN)
    view = {m["id"]: m for m in conv.messages(room.id)}
    assert view[asked.id]["status"] == "received" and "sentences" not in view[asked.id]
    assert view[reply.id]["status"] == "spoken" and view[reply.id]["text"] == "Hello."
    assert view[reply.id]["sentences"][0]["status"] == "spoken"
    # A message stored before messages were typed reads as a Message.
    old = {"id": "o" * 32, "role": "user", "turn": 1, "created_at": 1.0, "text": "", "source": "audio",
           "status": "transcribing", "audio": "uploads/a.wav", "asr_job_id": "j" * 32}
    redis.hset(keys.room(room.id, "msg"), old["id"], json.dumps(old))
    got = conv.get(room.id, old["id"])
    assert got.status is MessageStatus.TRANSCRIBING and got.asr_job_id == "j" * 32 and got.sentences is None
