"""A room's id, its zbjname and its stream key are three separate random values: knowing the id
(the API's name for the room) does not let anyone play it, the old `zbj-<room id>` stream path plays
nothing, and who may read a room by its stream key is unchanged. The app runs in-process against a
real redis-server (its own database), with no workers and no media server: the publish check and
the audience routes answer from Redis alone."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from redis import Redis

from test_ownership import ADMIN, H, KEY_A, KEY_B, Q, _avatar, build_app

UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
LEGACY_NAME = re.compile(rf"^(?P<user>[^*]+)\*(?P<uuid>{UUID4})$")


@pytest.fixture(scope="module")
def app(redis_server, tmp_path_factory):
    from fastapi.testclient import TestClient

    from core.settings import Settings

    settings = Settings(_env_file=None, redis_url=redis_server.url(8), data_dir=tmp_path_factory.mktemp("streamkeys"),
                        api_keys=[KEY_A, KEY_B], admin_keys=[ADMIN], publish_key="tests-publish-key-0123456789",
                        max_open_rooms=100, min_free_disk_mb=0, rate_limit_enabled=False)
    redis = Redis.from_url(settings.redis_url)
    redis.flushdb()
    _avatar(settings, settings.demo_avatar_id)
    with TestClient(build_app(settings)) as client:
        yield client, settings, redis
    redis.flushdb()


def _room(client, who: str = "A") -> dict:
    r = client.post("/v1/rooms", json={"username": f"tenant_{who}"}, headers=H[who])
    assert r.status_code == 201, r.text
    return r.json()


def _publish(client, settings, stream_key: str) -> int:
    """The media server's on_publish call, with the secret a stream worker would send for this key."""
    from core.credentials import publish_secret

    form = {"call": "publish", "name": stream_key, "secret": publish_secret(settings, stream_key), "addr": "127.0.0.1"}
    return client.post("/internal/media/publish", data=form).status_code


def test_the_stream_key_is_not_derived_from_the_room_id(app):
    client, _settings, _redis = app
    rooms = [_room(client) for _ in range(5)]
    for room in rooms:
        legacy = LEGACY_NAME.match(room["zbjname"])
        assert legacy, room["zbjname"]  # the legacy shape <username>*<uuid4> is kept
        assert re.fullmatch(r"zbj-[0-9a-f]{32}", room["stream_key"])
        assert room["stream_key"] != f"zbj-{room['id']}" and room["id"] not in room["stream_key"]
        assert uuid.UUID(legacy["uuid"]).hex != room["id"] and uuid.UUID(legacy["uuid"]).hex not in room["stream_key"]
        assert all(room["stream_key"] in url for name, url in room["urls"].items() if name != "publish")
        assert room["id"] not in json.dumps(room["urls"])  # no play URL names the room to the API
    assert len({r["stream_key"] for r in rooms}) == len(rooms)


def test_the_old_room_id_path_plays_nothing(app):
    client, settings, _redis = app
    room = _room(client)
    old = f"zbj-{room['id']}"
    assert client.get(f"/live/{old}.flv").status_code == 404
    assert client.get(f"/live/{old}/state").json() == {"state": "offline", "open": False}
    assert _publish(client, settings, old) == 403  # even with that key's right secret: no such room
    # the room's own stream key is the one that publishes and has a state
    assert _publish(client, settings, room["stream_key"]) == 200
    assert client.get(f"/live/{room['stream_key']}/state").json() == {"state": "offline", "open": True}


def test_a_closed_room_s_stream_key_is_gone(app):
    client, settings, redis = app
    room = _room(client)
    assert client.delete(f"/v1/rooms/{room['id']}", headers=H["A"]).status_code == 204
    assert _publish(client, settings, room["stream_key"]) == 403
    assert client.get(f"/live/{room['stream_key']}.flv").status_code == 404
    assert client.get(f"/live/{room['stream_key']}/state").json() == {"state": "offline", "open": False}
    assert client.get(f"/v1/rooms/{room['stream_key']}", headers=H["A"]).status_code == 404


def test_who_reads_a_room_by_its_stream_key_is_unchanged(app):
    client, _settings, _redis = app
    room = _room(client)
    for ref in (room["id"], room["zbjname"], room["stream_key"]):
        assert client.get(f"/v1/rooms/{ref}", headers=H["B"]).status_code == 404
        for who in ("A", "admin"):
            seen = client.get(f"/v1/rooms/{ref}", headers=H[who])
            assert seen.status_code == 200 and seen.json()["stream_key"] == room["stream_key"], (who, ref, seen.text)


def test_legacy_rooms_keep_their_shape_and_their_stream(app):
    client, _settings, _redis = app
    name = client.get("/create/zbj", params={"username": "legacy_user", "key": Q["A"]}).json()["message"]
    legacy = LEGACY_NAME.match(name)
    assert legacy and legacy["user"] == "legacy_user"
    room = client.get(f"/v1/rooms/{name}", headers=H["A"]).json()  # the backend finds what to play by lookup
    assert room["zbjname"] == name and uuid.UUID(legacy["uuid"]).hex != room["id"]
    assert client.get(f"/live/{room['stream_key']}/state").json()["open"] is True


def test_a_default_room_from_before_stream_keys_is_remade(app):
    """The built-in room is persistent: one made by an older version (stream key `zbj-<id>`, no
    stream lookup) would never play again, so the first legacy call without a zbjname remakes it."""
    from core import keys
    from core.rooms import RoomStore

    client, settings, redis = app
    store = RoomStore(redis, settings)
    old = store.ensure_default()
    redis.delete(keys.room_stream(old.stream_key))  # what an older version left: no stream lookup
    assert store.by_stream_key(old.stream_key) is None
    new = store.ensure_default()
    assert new.id != old.id and new.zbjname == settings.default_room and not store.is_open(old.id)
    assert store.by_stream_key(new.stream_key) == new
    assert store.ensure_default() == new  # kept from then on
