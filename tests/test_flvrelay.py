"""The HTTP-FLV relay (core/flvrelay.py): FLV tag parsing, per-viewer queues that never block the
relay, and a real relay between nginx-rtmp and many HTTP viewers (one of them stalled)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from conftest import free_port, wait_until

from core.flvrelay import AUDIO, FLV_HEADER, SCRIPT, VIDEO, FlvParser, OutTag, Relay, Tag, Viewer
from core.mediaserver import MediaServer, stat

pytestmark = pytest.mark.timeout(120)


def video(ts: int, key: bool = False, seq: bool = False, size: int = 100) -> Tag:
    head = bytes([(0x10 if key else 0x20) | 7, 0 if seq else 1, 0, 0, 0])
    return Tag(VIDEO, ts, head + b"\x00" * size)


def audio(ts: int, seq: bool = False) -> Tag:
    return Tag(AUDIO, ts, bytes([0xAF, 0 if seq else 1]) + b"\x11" * 20)


def test_tags_round_trip_through_the_parser_in_any_chunking():
    tags = [Tag(SCRIPT, 0, b"\x02\x00\x0aonMetaData"), video(0, key=True, seq=True), audio(0, seq=True),
            video(0, key=True), audio(23), video(40), video(0x1234567, size=70000)]
    stream = FLV_HEADER + b"".join(t.encode() for t in tags)
    for step in (1, 7, 4096, len(stream)):
        parser = FlvParser()
        got = []
        for i in range(0, len(stream), step):
            got += parser.feed(stream[i:i + step])
        assert [(t.kind, t.ts, t.body) for t in got] == [(t.kind, t.ts, t.body) for t in tags], step
    assert got[1].sequence_header and got[1].keyframe and got[2].sequence_header
    assert got[3].keyframe and not got[3].sequence_header and not got[5].keyframe
    assert got[6].ts == 0x1234567  # the extended timestamp byte


def _out(tag: Tag) -> OutTag:
    return OutTag(tag.kind, tag.ts, tag.keyframe, tag.encode())


def _drain(viewer: Viewer) -> bytes:
    async def first():
        async for chunk in viewer.chunks():
            return chunk
    return asyncio.run(asyncio.wait_for(first(), 1))


def test_a_viewer_too_far_behind_skips_to_the_next_keyframe_then_is_dropped():
    viewer = Viewer(max_lag_ms=1000, max_bytes=1 << 20, max_skips=2)
    viewer.push_initial(FLV_HEADER)
    for ts in range(0, 1000, 40):  # a second queued, never read: fine
        viewer.offer(_out(video(ts, key=ts == 0)))
    assert viewer.skips == 0 and not viewer.closed
    viewer.offer(_out(video(1040)))  # over a second behind: the queue goes, wait for a keyframe
    assert viewer.skips == 1 and viewer.queued_bytes == 0
    viewer.offer(_out(audio(1050)))
    viewer.offer(_out(video(1080)))
    assert viewer.queued_bytes == 0
    viewer.offer(OutTag(VIDEO, 1100, False, b"hdr", header=True))
    assert viewer.queued_bytes == 3  # codec headers are never skipped
    viewer.offer(_out(video(2000, key=True)))
    assert viewer.queued_bytes > 3
    assert _drain(viewer) == FLV_HEADER  # the stream's start is kept whatever happened
    assert _drain(viewer) == b"hdr" + _out(video(2000, key=True)).raw
    for _ in range(3):  # falling behind again and again: disconnected
        for ts in range(3000, 5000, 40):
            viewer.offer(_out(video(ts, key=ts == 3000)))
    assert viewer.closed


def test_relay_timeline_stays_continuous_across_source_restarts():
    relay = Relay("k", "rtmp://unused")
    seen = []

    class Sink(Viewer):
        def offer(self, tag):
            seen.append(tag)

    relay.viewers.add(Sink(1000, 1 << 20))
    relay._source_started(0.0)  # what ffmpeg's log says: its time zero is the publisher's 0
    for tag in (Tag(SCRIPT, 0, b"meta"), video(0, key=True, seq=True), audio(0, seq=True)):
        relay._on_tag(tag)
    for ts in (5000, 5040, 5080):  # the first run starts at its own clock
        relay._on_tag(video(ts, key=ts == 5000))
    relay._offset = None  # a new ffmpeg run starts again at 0, 3 s into the publisher's stream
    relay._source_started(3.0)
    for ts in (0, 40):
        relay._on_tag(video(ts, key=ts == 0))
    relay._on_tag(video(900000, key=True))  # a publisher whose clock jumped
    live = [t.ts for t in seen if not t.header]
    assert live == [0, 40, 80, 120, 160, 200]
    headers = [t for t in seen if t.header]
    clocks = [clock_of(t.raw) for t in headers if b"onMtlClock" in t.raw]
    # Codec headers sent once, to viewers that were there; the stream clock at each new source run:
    # output = publisher time + offset, and the viewer's first media tag (its player's zero) at 0.
    assert [t.kind for t in headers if b"onMtlClock" not in t.raw] == [SCRIPT, VIDEO, AUDIO]
    assert clocks == [{"offset_ms": -5000, "first_ms": 0}, {"offset_ms": 120 - 3000, "first_ms": 0},
                      {"offset_ms": 200 - 900000 - 3000, "first_ms": 0}], clocks

    async def join_late():  # a viewer joining now starts with the headers and the cached GOP
        relay.source_url = "rtmp://127.0.0.1:1/none"  # its source: nothing to pull in this test
        viewer = relay.join()
        async for chunk in viewer.chunks():
            await relay.close()
            return chunk

    tags = FlvParser().feed(asyncio.run(join_late()))
    assert [t.kind for t in tags[:3]] == [SCRIPT, VIDEO, AUDIO] and tags[4].keyframe and tags[4].ts == 200
    # Before its cached GOP, the late viewer learns its clock: its first media tag is the GOP's.
    assert clock_of(tags[3].encode()) == {"offset_ms": 200 - 900000 - 3000, "first_ms": 200}


def clock_of(raw: bytes) -> dict:
    """The numbers of an onMtlClock script tag (AMF0: name, then an object of numbers)."""
    import struct

    body = FlvParser().feed(FLV_HEADER + raw)[0].body
    name_len = int.from_bytes(body[1:3], "big")
    assert body[3:3 + name_len] == b"onMtlClock" and body[3 + name_len] == 3
    pos, out = 4 + name_len, {}
    while body[pos:pos + 3] != b"\x00\x00\x09":
        key_len = int.from_bytes(body[pos:pos + 2], "big")
        key = body[pos + 2:pos + 2 + key_len].decode()
        assert body[pos + 2 + key_len] == 0  # an AMF0 number
        out[key] = int(struct.unpack(">d", body[pos + 3 + key_len:pos + 11 + key_len])[0])
        pos += 11 + key_len
    return out


# ---- a real relay: nginx-rtmp, a publisher, many HTTP-side viewers ----

FPS = 25


@pytest.fixture(scope="module")
def live_stream(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("flvmedia")
    server = MediaServer(prefix=prefix, rtmp_port=free_port(), http_port=free_port())
    nginx = server.popen(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "60", "-c:v", "libx264",
         "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(2 * FPS), "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-f", "flv", server.rtmp_url("relay")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        def publishing():
            try:
                return stat(server.http_port).get("relay", {}).get("publishing")
            except OSError:
                return False

        wait_until(publishing, 15, what="the publisher")
        yield server
    finally:
        for proc in (publisher, nginx):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_one_pull_serves_many_viewers_and_a_stalled_one_slows_nobody(live_stream):
    async def run():
        relay = Relay("relay", live_stream.rtmp_url("relay"), max_lag_s=1.0, linger_s=0.5)
        counts = {}

        async def watch(name: str, seconds: float):
            viewer = relay.join()
            parser, frames, first = FlvParser(), [], None
            try:
                async for chunk in viewer.chunks():
                    for tag in parser.feed(chunk):
                        if tag.kind == VIDEO and not tag.sequence_header:
                            now = time.monotonic()
                            first = first or now
                            frames.append(now)
                    if first and time.monotonic() - first > seconds:
                        break
            finally:
                relay.leave(viewer)
            counts[name] = frames

        stalled = relay.join()  # joins and never reads
        await asyncio.gather(*(watch(f"v{i}", 6) for i in range(8)))
        assert relay.proc is not None  # one ffmpeg for all of them
        runs = relay.runs
        await relay.close()
        return counts, stalled, runs

    counts, stalled, runs = asyncio.run(run())
    assert runs == 1
    for name, frames in counts.items():
        steady = [t for t in frames if t >= frames[0] + 2.5]  # past the cached GOP's burst
        span = steady[-1] - steady[0]
        assert 22 <= (len(steady) - 1) / span <= 28, (name, len(steady), span)
    assert stalled.skips >= 1 or stalled.closed  # the stalled viewer lost its backlog, nobody else noticed


# ---- against the fleet: the API's /live/<key>.flv ----

def test_live_flv_endpoint_refuses_unknown_rooms(api):
    assert api.get("/live/zbj-0123456789abcdef0123456789abcdef.flv").status_code == 404
    assert api.get("/live/../../etc/passwd").status_code == 404
    assert api.get("/live/hnkjxyms.flv").status_code == 404


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_twenty_viewers_and_a_stalled_one_all_get_the_room_at_25_fps(api, service):
    """20 HTTP-FLV viewers for 20 s while the room speaks, plus one that never reads; the room's
    own RTMP stream is pulled alongside to check the publisher keeps its rate."""
    import threading

    from bench.flv_viewers import watch_many
    from bench.viewer import count_video_frames
    from speech import upload_speech

    speech, _ = upload_speech(api, ["我们现在开始面试，请先做一个简单的自我介绍。"], pause_s=0.5, lead_s=0.2)
    room = api.post("/v1/rooms", json={"username": "twenty_viewers"}).json()
    flv = room["urls"]["flv"]
    assert flv == f"{api.base_url}/live/{room['stream_key']}.flv"
    wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json()["publishing"], 30, what="the room to publish")
    publisher: dict = {}
    seconds = 20
    puller = threading.Thread(target=lambda: publisher.update(count_video_frames(room["urls"]["rtmp"], seconds)))
    midway: dict = {}

    def talk():
        time.sleep(2)
        api.post(f"/v1/rooms/{room['id']}/say", json={"audio": speech})
        time.sleep(seconds / 2 - 2)
        midway.update(api.get(f"/v1/rooms/{room['id']}").json())

    talker = threading.Thread(target=talk)
    puller.start()
    talker.start()
    stats = asyncio.run(watch_many(flv, 20, seconds, stalled=1))
    puller.join()
    talker.join()
    events = [e["event"] for e in api.get(f"/v1/rooms/{room['id']}/events").json()]
    api.delete(f"/v1/rooms/{room['id']}")
    assert "speech_start" in events and events.count("session_start") == 1, events
    summaries = [s.summary() for s in stats]
    assert not [s for s in summaries if s["error"]], summaries
    # Every viewer receives the stream at the room's rate (loose bounds: a shared 2-core machine).
    assert all(s["fps"] >= 22.0 for s in summaries), summaries
    assert publisher["fps"] >= 23.0, publisher
    assert midway["viewers_by_route"]["flv"] >= 20, midway
    assert midway["state"] in ("speaking", "idle"), midway


@pytest.mark.slow
def test_viewers_are_let_go_when_their_room_closes(api, service):
    room = api.post("/v1/rooms", json={"username": "closing_room"}).json()
    wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json()["publishing"], 30, what="the room to publish")

    async def watch() -> tuple[int, float]:
        import httpx

        received, closed_at = 0, None
        async with httpx.AsyncClient(timeout=httpx.Timeout(30)) as client:
            async with client.stream("GET", room["urls"]["flv"]) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "video/x-flv"
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > 50_000 and closed_at is None:
                        closed_at = time.monotonic()
                        await asyncio.to_thread(api.delete, f"/v1/rooms/{room['id']}")
        return received, time.monotonic() - closed_at

    received, ended_after = asyncio.run(asyncio.wait_for(watch(), 60))
    assert ended_after < 20, ended_after  # the response ended, instead of waiting for a publisher forever
