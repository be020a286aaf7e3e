"""The services behind the feedback, lip-sync, conversation, live, job and file routes, called as the
routes call them, with no app and no HTTP: each refusal is the domain error (core/errors.py) that
api/errors.py maps once, and each tenant's things stay its own (another key's read as unknown).
A real redis-server (its own database), real ffprobe, a temporary data directory; no workers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from redis import Redis

from speech import tone_wav
from utils.services import callers, owned_file, prepared_avatar, run, service_settings, video_bytes


@pytest.fixture
def env(redis_server, tmp_path):
    settings = service_settings(redis_server.url(9), tmp_path / "data", feedback_max_video_s=0.5,
                                max_lipsync_audio_s=1.0, max_message_audio_s=1.0)
    redis = Redis.from_url(settings.redis_url)
    redis.flushdb()
    prepared_avatar(settings, settings.demo_avatar_id, cycle_length=10)
    yield settings, redis, callers()
    redis.flushdb()


def _room(settings, redis, who):
    from core.rooms import RoomStore

    return RoomStore(redis, settings).create(username="svc", owner=who.owner, ttl_s=600)


def _job(settings, redis, who, kind="tts", status=None) -> str:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from core.jobs import Kind, enqueue, new_job_id

    job_id = enqueue(settings, redis, Kind(kind), {"text": "hello", "output_name": "x"}, new_job_id(),
                     owner=who.owner)
    if status is not None:
        Job.fetch(job_id, connection=redis, serializer=JSONSerializer).set_status(status)
    return job_id


def _code(excinfo) -> str:
    return excinfo.value.code


# ---- jobs and files ----

def test_cancel_is_the_owners_and_only_before_the_job_starts(env):
    from rq.job import JobStatus

    from api.services.jobs import cancel
    from core.errors import Conflict, NotFound

    settings, redis, who = env
    job_id = _job(settings, redis, who["A"])
    with pytest.raises(NotFound) as exc:
        run(cancel(redis, job_id, caller=who["B"]))
    assert _code(exc) == "unknown_job"
    assert run(cancel(redis, job_id, caller=who["A"])).status == JobStatus.CANCELED
    done = _job(settings, redis, who["A"], status=JobStatus.FINISHED)
    with pytest.raises(Conflict) as exc:
        run(cancel(redis, done, caller=who["admin"]))
    assert _code(exc) == "job_not_cancellable" and "finished" in exc.value.message


def test_downloads_name_a_public_kind_and_a_file_of_the_caller(env):
    from api.services.files import download_path
    from core.errors import NotFound

    settings, redis, who = env
    ref = owned_file(settings, redis, who["A"], "a.wav", tone_wav(0.5))
    kind, name = ref.split("/", 1)
    assert download_path(settings, kind, name, redis=redis, caller=who["A"]).read_bytes()[:4] == b"RIFF"
    assert download_path(settings, kind, name, redis=redis, caller=who["admin"]).is_file()
    for args, caller in (((kind, name), who["B"]), (("bogus", name), who["A"]), ((kind, "none.wav"), who["A"])):
        with pytest.raises(NotFound) as exc:
            download_path(settings, *args, redis=redis, caller=caller)
        assert _code(exc) == "not_found"


def test_uploads_too_large_or_empty_are_refused_as_such(env, tmp_path):
    from io import BytesIO

    from starlette.datastructures import UploadFile

    from api.errors import domain_status
    from api.uploads import save_audio_upload
    from core.errors import Missing, TooLarge

    settings, _redis, _who = env
    small = settings.model_copy(update={"max_upload_bytes": 1000})
    with pytest.raises(TooLarge) as exc:
        run(save_audio_upload(small, UploadFile(BytesIO(tone_wav(0.5)), filename="a.wav")))
    assert _code(exc) == "upload_too_large" and domain_status(exc.value) == 413
    with pytest.raises(Missing) as exc:
        run(save_audio_upload(settings, UploadFile(BytesIO(b""), filename="a.wav")))
    assert _code(exc) == "empty_upload"
    assert not [p for p in settings.kind_dir("uploads").iterdir()], "a refused upload leaves no file"


# ---- feedback ----

def test_feedback_questions_and_answer_videos_are_checked_before_queueing(env, tmp_path):
    from api.services import feedback
    from core.errors import Invalid, Missing, NotFound

    settings, redis, who = env
    with pytest.raises(Missing) as exc:
        feedback.legacy_question("tests/x.mp4", " ", "0")
    assert _code(exc) == "empty_parameter" and "msId" in exc.value.message
    with pytest.raises(Invalid):
        feedback.legacy_question("tests/x.mp4", "m1", "one")
    assert feedback.legacy_question(" tests/x.mp4 ", "m1", " 3 ") == ("tests/x.mp4", "m1", 3)
    for ms_id, index in (("a b", 0), ("m1", 100_001)):
        with pytest.raises(Invalid) as exc:
            feedback.check_question(ms_id, index)
        assert _code(exc) == "invalid_input"
    expected = {"junk.mp4": (b"not a video" * 20, "undecodable_video"), "a.wav": (tone_wav(0.5), "no_frames"),
                "long.mp4": (video_bytes(tmp_path, 1.0), "video_too_long")}
    for name, (data, code) in expected.items():
        ref = owned_file(settings, redis, who["A"], name, data)
        with pytest.raises(Invalid) as exc:
            feedback.check_answer_video(settings, redis, who["A"], ref)
        assert _code(exc) == code, name
        with pytest.raises(NotFound) as exc:
            feedback.check_answer_video(settings, redis, who["B"], ref)
        assert _code(exc) == "file_not_owned"


def test_feedback_rows_are_read_only_by_their_owner(env):
    from api.services import feedback
    from core.errors import NotFound
    from core.feedback.db import replace_result

    settings, _redis, who = env
    replace_result(settings, {"ms_id": "ms-a", "index": 0, "content": "good", "sort": 80, "url": None,
                              "owner": who["A"].owner})
    with pytest.raises(NotFound) as exc:
        feedback.list_feedback(settings, who["B"], "ms-a", None)
    assert _code(exc) == "unknown_ms_id"
    for caller in (who["A"], who["admin"]):
        rows = feedback.list_feedback(settings, caller, "ms-a", None).results
        assert [(r.index, r.content) for r in rows] == [(0, "good")]
    assert feedback.list_feedback(settings, who["A"], "ms-a", 1).results == []


# ---- lip-sync ----

def test_lipsync_checks_avatar_cycle_engine_room_and_speech(env):
    from api.services import lipsync
    from api.services.avatars import read_avatar
    from core.errors import Invalid, NotFound

    settings, redis, who = env
    avatar = read_avatar(settings, redis, settings.demo_avatar_id)
    with pytest.raises(Invalid) as exc:
        lipsync.check_cycle_start(avatar, 10)
    assert _code(exc) == "bad_cycle_start" and exc.value.details == {"cycle_length": 10}
    lipsync.check_cycle_start(avatar, 9)
    with pytest.raises(Invalid) as exc:
        lipsync.check_engine(settings, avatar, "exemplar")
    assert _code(exc) == "not_enrolled"
    room = _room(settings, redis, who["A"])
    with pytest.raises(NotFound) as exc:
        lipsync.cycle_room(settings, redis, who["B"], room.id)
    assert _code(exc) == "unknown_room"
    assert lipsync.cycle_room(settings, redis, who["A"], room.zbjname) == room.id
    assert lipsync.cycle_room(settings, redis, who["B"], "my-label") == "my-label"
    long_audio = owned_file(settings, redis, who["A"], "long.wav", tone_wav(1.5))
    with pytest.raises(Invalid) as exc:
        run(lipsync.render(settings, redis, who["A"], settings.demo_avatar_id, long_audio, None, None, None, None))
    assert _code(exc) == "audio_too_long"
    with pytest.raises(NotFound) as exc:
        run(lipsync.render(settings, redis, who["B"], settings.demo_avatar_id, long_audio, None, None, None, None))
    assert _code(exc) == "file_not_owned"
    accepted = run(lipsync.render(settings, redis, who["A"], settings.demo_avatar_id, None, "hi", "warp", None, 3))
    assert accepted.result_url == f"/v1/files/lipsync/{accepted.job_id}.mp4"


def test_mouth_series_only_of_a_finished_lipsync_job_of_the_caller(env):
    from rq.job import JobStatus

    from api.services.lipsync import job_mouth
    from core.errors import Conflict, NotFound

    settings, redis, who = env
    tts = _job(settings, redis, who["A"])
    with pytest.raises(NotFound) as exc:
        run(job_mouth(settings, redis, who["A"], tts))
    assert _code(exc) == "not_found"
    queued = _job(settings, redis, who["A"], "lipsync")
    with pytest.raises(Conflict) as exc:
        run(job_mouth(settings, redis, who["A"], queued))
    assert _code(exc) == "job_not_finished"
    done = _job(settings, redis, who["A"], "lipsync", status=JobStatus.FINISHED)
    mouth = {"fps": 25, "frames": [{"t": 0.0, "open": 0.4, "width": 0.5}]}
    (settings.kind_dir("lipsync") / f"{done}.mouth.json").write_text(json.dumps(mouth))
    assert run(job_mouth(settings, redis, who["admin"], done)).model_dump() == mouth
    with pytest.raises(NotFound) as exc:
        run(job_mouth(settings, redis, who["B"], done))
    assert _code(exc) == "unknown_job"


# ---- live ----

def test_live_rooms_are_found_by_stream_key_only_viewers_capped_and_publishers_checked(env):
    from api.services import live
    from core.errors import NotFound
    from core.flvrelay import RelayHub
    from core.limits import Refused, Shortage
    from core.rooms import RoomStore

    settings, redis, who = env
    store = RoomStore(redis, settings)
    room = _room(settings, redis, who["A"])
    assert live.live_state(store, room.stream_key) == {"state": "offline", "open": True}
    assert live.open_stream_key(store, f"{room.stream_key}.flv") == room.stream_key
    for name in (room.stream_key, f"{room.id}.flv", "zbj-0123456789abcdef0123456789abcdef.flv"):
        with pytest.raises(NotFound) as exc:
            live.open_stream_key(store, name)
        assert _code(exc) == "unknown_room", name
    with pytest.raises(NotFound):
        live.live_state(store, "bad!key")
    from core.credentials import publish_secret

    secret = publish_secret(settings, room.stream_key)
    assert live.may_publish_to(store, room.stream_key, secret)
    assert not live.may_publish_to(store, room.stream_key, None)
    assert not live.may_publish_to(store, room.stream_key, secret[:-1] + ("1" if secret[-1] == "0" else "0"))
    full = RelayHub(source_url_for=lambda key: live.source_url(settings, key), max_viewers=0)
    with pytest.raises(Refused) as exc:
        run(live.watch(store, full, f"{room.stream_key}.flv"))
    assert exc.value.kind == Shortage.UNAVAILABLE and exc.value.code == "too_many_viewers"
    store.close(room.id)
    assert not live.may_publish_to(store, room.stream_key, secret), "a closed room is not republished"


def test_room_wake_messages_come_through_the_store(env):
    from core.rooms import RoomStore, wake_channel, wake_room

    settings, redis, who = env
    store = RoomStore(redis, settings)
    room = _room(settings, redis, who["A"])
    stop, heard = threading.Event(), []

    def listen():
        for what in store.wake_messages(room.id, stop.is_set, poll_s=0.05):
            heard.append(what)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not heard and time.monotonic() < deadline:
        wake_room(redis, room.id, "speech")  # until the subscription is up
        time.sleep(0.05)
    stop.set()
    thread.join(2)
    assert heard and set(heard) == {"speech"} and not thread.is_alive()
    assert redis.pubsub_numsub(wake_channel(room.id))[0][1] == 0, "the subscription is closed once stopped"


# ---- conversations ----

def test_messages_are_text_or_owned_audio(env):
    from api.services import conversations as conv
    from core.errors import Invalid, NotFound

    settings, redis, who = env
    audio = owned_file(settings, redis, who["A"], "a.wav", tone_wav(0.5))
    for raw in (b"{bad", json.dumps({"text": "hi", "audio": audio}).encode()):
        with pytest.raises(Invalid) as exc:
            conv.json_message(settings, redis, who["A"], raw)
        assert _code(exc) == "invalid_input"
    with pytest.raises(NotFound) as exc:
        conv.json_message(settings, redis, who["B"], json.dumps({"audio": audio}).encode())
    assert _code(exc) == "file_not_owned"
    assert conv.json_message(settings, redis, who["A"], json.dumps({"audio": audio}).encode()) == (None, audio)
    assert run(conv.message_input(settings, redis, who["A"], conv.Parts(form=True, text="hello"))) == ("hello", None)
    room = _room(settings, redis, who["A"])
    message = run(conv.send_message(settings, redis, who["A"], room, conv.Parts(form=False, body=b'{"text": "hi"}')))
    assert [m["text"] for m in conv.room_history(settings, redis, who["A"], room.id)] == ["hi"]
    assert message.turn >= 1
    with pytest.raises(NotFound) as exc:
        conv.room_history(settings, redis, who["B"], room.id)
    assert _code(exc) == "unknown_room"


def test_material_is_read_checked_and_kept_per_room(env):
    from io import BytesIO

    from starlette.datastructures import UploadFile

    from api.services import conversations as conv
    from api.services.rooms import get_room
    from core.errors import Forbidden, Invalid, NotFound, TooLarge
    from core.rooms import RoomStore

    settings, redis, who = env
    with pytest.raises(Invalid) as exc:
        run(conv.read_material(conv.Parts(form=True, file="not a file")))
    assert _code(exc) == "missing_parameter"
    with pytest.raises(TooLarge) as exc:
        run(conv.read_material(conv.Parts(form=False, body=b" " * conv.MAX_MATERIAL_READ)))
    assert _code(exc) == "material_too_large"
    sheet = {"products": [{"id": "p1", "name": "Lamp", "price": "9.9", "facts": ["warm light"]}]}
    upload = UploadFile(BytesIO(json.dumps(sheet).encode()), filename="sheet.json")
    assert run(conv.checked_material(conv.Parts(form=True, file=upload)))["products"] == 1
    store = RoomStore(redis, settings)
    room = _room(settings, redis, who["A"])
    assert conv.room_material(settings, redis, who["A"], room.id)["source"] == "sample"
    run(conv.put_material(redis, get_room(store, room.id, who["A"], True), conv.Parts(
        form=False, body=json.dumps(sheet).encode(), content_type="application/json")))
    assert conv.room_material(settings, redis, who["admin"], room.id)["source"] == "room"
    with pytest.raises(NotFound):
        conv.delete_material(settings, redis, who["B"], room.id)
    conv.delete_material(settings, redis, who["A"], room.id)
    assert conv.room_material(settings, redis, who["A"], room.id)["source"] == "sample"
    default = store.ensure_default()
    with pytest.raises(Forbidden) as exc:
        conv.delete_material(settings, redis, who["admin"], default.zbjname)
    assert _code(exc) == "read_only"


# ---- the shape that keeps it so ----

def test_routers_raise_no_http_errors_and_call_no_redis():
    """Routers and services name no HTTP error (api/errors.py maps domain errors, once); routers and
    workers call stores, never a Redis client (nor a pub/sub of one)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for folder in ("api/routers", "api/services", "workers"):
        for path in sorted((root / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            where = path.relative_to(root)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and folder != "workers":
                    found += [f"{where}:{node.lineno}: imports {a.name}" for a in node.names
                              if a.name in ("ApiError", "HTTPException")]
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    target = ast.unparse(node.func.value)
                    if node.func.attr == "pubsub" or (folder == "api/routers" and target in ("redis", "aredis")):
                        found.append(f"{where}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not found, "\n".join(found)
