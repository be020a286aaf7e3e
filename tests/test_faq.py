"""The `faq` responder: answers from the operator's material (the sample product sheet shipped with the
demo when a room has none), live-commerce phrasing in Chinese and English, paraphrases, a polite
deflection off topic; material uploads (JSON, CSV) through /v1 with plain errors, owned by the room's
owner. In-process API on a real redis-server; no fleet."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from core.conversations.faq import DEFLECT, index_for, parse_material, sample_material
from core.conversations.responders import FaqResponder, TurnContext, load_responder
from core.conversations.store import MaterialStore
from core.errors import Invalid
from core.rooms import RoomStore
from core.settings import Settings


def ask(question: str, language: str = "zh", material: dict | None = None):
    return index_for(material or sample_material(), language).match(question)


@pytest.mark.parametrize("question, label, needle", [
    ("价格", "shop:price", "六十九元"),                       # a bare "price?" lists the sheet's prices
    ("保温杯价格多少", "product:thermos/price", "六十九元"),
    ("怎么买", "shop:how_to_buy", "小黄车"),
    ("有没有优惠", "shop:discount", "立减"),
    ("什么时候发货", "shop:shipping", "48小时"),
    ("羽绒服有没有优惠", "product:jacket/price", "立减"),   # the product's live price and the shop's offer
    ("How much is the rice cooker?", "product:rice_cooker/price", "239"),
    ("Do you offer free shipping?", "shop:shipping", "free shipping"),
])
def test_live_commerce_phrasing_works_on_the_sample_sheet(question, label, needle):
    language = "en" if question.isascii() else "zh"
    m = ask(question, language)
    assert m.label == label and needle in m.answer, (m.label, m.answer)


def test_off_topic_questions_are_deflected_politely():
    for q in ("今天天气怎么样", "给我讲个笑话"):
        m = ask(q)
        assert m.kind == "deflect" and m.answer == DEFLECT["zh"], (q, m)
    assert ask("Who won the football yesterday?", "en").answer == DEFLECT["en"]


def test_the_operators_own_csv_answers_and_replaces_the_sample():
    sheet = "name,price,facts,aliases\n手工皂,三十九元一块,橄榄油冷制;适合全家使用,香皂\n".encode()
    material = parse_material(sheet, "products.csv", "text/csv")
    assert ask("香皂多少钱", material=material).answer == "手工皂，三十九元一块。"
    qa = parse_material("question,answer\n周末发货吗,周末也正常发货。\n".encode(), "qa.csv")
    assert ask("周六会发货吗", material=qa).label == "qa:0"
    other = ask("保温杯多少钱", material=material)  # the sample is not mixed in: the room's prices are listed
    assert "保温杯" not in other.answer and "手工皂" in other.answer, other


@pytest.mark.parametrize("raw, name, code", [
    (b"{not json", "m.json", "invalid_material"),
    (b"[]", "m.json", "invalid_material"),
    (b'{"products": [{"price": "9"}]}', "m.json", "invalid_material"),
    (b"colour,size\nred,M\n", "m.csv", "invalid_material"),
    (b'{"shop": {"weather": "sunny"}}', "m.json", "invalid_material"),
    (b"x" * (300 * 1024), "m.csv", "material_too_large"),
    (b"\xff\xfe\x00bad", "m.csv", "invalid_material"),
    ("name,price,facts\n皂\x07,九元,好\n".encode(), "m.csv", "invalid_text"),  # an upload is not seen by the gate
])
def test_bad_material_is_refused_with_a_reason(raw, name, code):
    with pytest.raises(Invalid) as err:
        parse_material(raw, name)
    assert err.value.code == code


@pytest.fixture()
def settings(redis_server, tmp_path):
    return Settings(redis_url=redis_server.url(3), data_dir=tmp_path, llm_url=None)


def test_the_responder_answers_from_the_rooms_material(settings):
    r = Redis.from_url(settings.redis_url)
    room = RoomStore(r, settings).create(username="faq_room", responder="faq")
    responder = load_responder("faq", r, settings)
    assert isinstance(responder, FaqResponder)
    said = "".join(responder.reply(TurnContext(room=room, user_text="耳机多少钱？", language="zh")))
    assert "一百九十九元" in said  # the sample sheet: the room has no material yet
    MaterialStore(r).put(room.id, {"products": [{"id": "soap", "name": "手工皂", "price": "三十九元"}], "qa": [],
                                   "shop": {}})
    said = "".join(responder.reply(TurnContext(room=room, user_text="手工皂怎么卖", language="zh")))
    lead, _, answer = said.partition("！")
    assert answer == "手工皂，三十九元。" and lead in ("好的", "好嘞", "这个问得好"), said
    RoomStore(r, settings).close(room.id)
    assert MaterialStore(r).get(room.id) is None  # gone with the room


def test_material_upload_through_v1_owned_by_the_rooms_owner(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    from api.access import key_owner
    from api.main import create_app

    settings = settings.model_copy(update={"api_keys": ["key-a", "key-b"]})
    r = Redis.from_url(settings.redis_url)
    room = RoomStore(r, settings).create(username="faq_api", responder="faq", owner=key_owner("key-a"))
    a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    with TestClient(create_app(settings)) as client:
        got = client.get(f"/v1/rooms/{room.id}/material", headers=a).json()
        assert got["source"] == "sample" and got["products"] == 6, got
        csv = "name,price,facts\n手工皂,三十九元,橄榄油冷制\n".encode()
        up = client.put(f"/v1/rooms/{room.id}/material", headers=a, files={"file": ("sheet.csv", csv, "text/csv")})
        assert up.status_code == 200 and up.json()["source"] == "room" and up.json()["products"] == 1, up.text
        sheet = json.dumps({"qa": [{"q": "周末发货吗", "a": "周末也发货。"}]})
        up = client.put(f"/v1/rooms/{room.id}/material", headers={**a, "Content-Type": "application/json"},
                        content=sheet)
        assert up.status_code == 200 and up.json()["qa"] == 1, up.text
        bad = client.put(f"/v1/rooms/{room.id}/material", headers={**a, "Content-Type": "application/json"},
                         content=b"{oops")
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_material", bad.text
        other = client.put(f"/v1/rooms/{room.id}/material", headers=b, files={"file": ("s.csv", csv, "text/csv")})
        assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_room"
        assert client.get(f"/v1/rooms/{room.id}/material", headers=b).status_code == 404
        assert client.delete(f"/v1/rooms/{room.id}/material", headers=a).status_code == 204
        assert client.get(f"/v1/rooms/{room.id}/material", headers=a).json()["source"] == "sample"
        assert "/v1/rooms/{room_ref}/material" in client.get("/openapi.json").json()["paths"]


def test_a_material_file_is_checked_before_a_room_exists(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    from api.main import create_app

    settings = settings.model_copy(update={"api_keys": ["key-a"]})
    a = {"X-API-Key": "key-a"}
    with TestClient(create_app(settings)) as client:
        csv = "question,answer\n周末发货吗;周六发货吗,周末也发货。\n".encode()
        got = client.post("/v1/material/check", headers=a, files={"file": ("qa.csv", csv, "text/csv")})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["source"] == "checked" and body["qa"] == 1
        assert body["material"]["qa"][0]["q"] == ["周末发货吗", "周六发货吗"]
        # A bad file says why in plain words; nothing is stored anywhere.
        bad = client.post("/v1/material/check", headers=a, files={"file": ("x.csv", b"colour,size\nred,M\n", "text/csv")})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_material"
        assert "name, price, facts" in bad.json()["error"]["message"]
        assert client.post("/v1/material/check", files={"file": ("qa.csv", csv, "text/csv")}).status_code == 401
        assert "/v1/material/check" in client.get("/openapi.json").json()["paths"]
