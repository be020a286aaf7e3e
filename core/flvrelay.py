"""HTTP-FLV for browsers: one relay per live room fans the room's stream out to every HTTP viewer.

A browser cannot play RTMP, and HLS lags seconds behind. The relay pulls the room's RTMP stream
once from the media server with one ``ffmpeg -c copy`` (no decoding, no re-encoding), cuts its FLV
output into tags and hands every tag to every viewer of the room; pages play it with mpegts.js
(vendored under api/static/vendor). The API serves it as ``GET /live/<stream_key>.flv``
(api/routers/live.py), so the console plays rooms from its own origin.

- A new viewer gets the FLV header, the metadata and codec sequence headers, then the cached
  group of pictures from its last keyframe, so its picture starts at once; then live tags.
- Each viewer has its own bounded queue; the relay never waits for a viewer. One that falls more
  than ``max_lag_s`` behind (a stalled network) loses what it had queued and resumes at the next
  keyframe; one that keeps falling behind is disconnected. Other viewers and the room's
  publisher never notice.
- Timestamps are re-based onto one continuous timeline, so a restart of the source (the
  publisher reconnects, another stream worker takes the room over, ffmpeg is restarted) does not
  break players that stay connected.
- A relay starts with its first viewer and stops ``linger_s`` after its last one left.
- The stream clock: nginx-rtmp passes the publisher's timestamps through, which are the
  publisher's frame counter (core/live.py: frame F at F x 40 ms); ffmpeg starts its output at 0
  and says where its input started (``start:`` on its log). Every viewer is told, in an
  ``onMtlClock`` script tag (AMF0; players ignore names they do not know),
  ``offset_ms`` (output time = publisher time + offset, for the current source run) and
  ``first_ms`` (the output time of the first media tag it was sent, which players such as
  mpegts.js take as their time zero); again whenever the offset changes. A page maps a room
  event's ``stream_ts`` to its player's ``currentTime`` with them (api/static/console/player.js).

Viewer counts of every API process are kept in Redis (``mtl:flv:<process>``) for room listings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from core import keys

log = logging.getLogger(__name__)

AUDIO, VIDEO, SCRIPT = 8, 9, 18
# "FLV", version 1, audio + video present, header size 9; then PreviousTagSize0.
FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
FRAME_MS = 40  # one frame at 25 fps: the gap put between two source runs
CLOCK_NAME = "onMtlClock"  # the script tag that tells a viewer how its timeline maps to the publisher's
MAX_GOP_TAGS = 1500  # a cached GOP longer than this (~20 s) is not kept whole
# keys.flv_counts(<process>): hash per API process, v:<stream key> = viewers, r:<stream key> = 1 while pulling;
COUNTS_INDEX = keys.FLV_PROCESSES  # the names of processes that published counts
COUNTS_TTL_S = 10


@dataclass(slots=True)
class Tag:
    kind: int
    ts: int  # milliseconds
    body: bytes

    @property
    def keyframe(self) -> bool:
        return self.kind == VIDEO and bool(self.body) and self.body[0] >> 4 == 1

    @property
    def sequence_header(self) -> bool:
        """AVC decoder configuration or AAC AudioSpecificConfig (what a decoder needs first)."""
        if len(self.body) < 2:
            return False
        if self.kind == VIDEO:
            return self.body[0] & 0x0F == 7 and self.body[1] == 0
        if self.kind == AUDIO:
            return self.body[0] >> 4 == 10 and self.body[1] == 0
        return False

    def encode(self, ts: int | None = None) -> bytes:
        ts = max(0, self.ts if ts is None else ts) & 0xFFFFFFFF
        size = len(self.body)
        head = bytes((self.kind, size >> 16 & 0xFF, size >> 8 & 0xFF, size & 0xFF,
                      ts >> 16 & 0xFF, ts >> 8 & 0xFF, ts & 0xFF, ts >> 24 & 0xFF, 0, 0, 0))
        return head + self.body + (11 + size).to_bytes(4, "big")


def _amf_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def clock_body(offset_ms: int, first_ms: int) -> bytes:
    """An ``onMtlClock`` script tag's body: AMF0 string, then an object of two numbers."""
    fields = b"".join(_amf_string(k) + b"\x00" + struct.pack(">d", float(v))
                      for k, v in (("offset_ms", offset_ms), ("first_ms", first_ms)))
    return b"\x02" + _amf_string(CLOCK_NAME) + b"\x03" + fields + b"\x00\x00\x09"


class FlvError(ValueError):
    pass


class FlvParser:
    """Incremental FLV parser: ``feed(bytes)`` returns the complete tags so far."""

    def __init__(self, max_tag_bytes: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._header_done = False
        self._max = max_tag_bytes

    def feed(self, data: bytes) -> list[Tag]:
        self._buf += data
        tags: list[Tag] = []
        pos = 0
        buf = self._buf
        if not self._header_done:
            if len(buf) < 9:
                return tags
            if bytes(buf[:3]) != b"FLV":
                raise FlvError("not an FLV stream")
            offset = int.from_bytes(buf[5:9], "big")
            if len(buf) < offset + 4:
                return tags
            pos = offset + 4  # the header, then PreviousTagSize0
            self._header_done = True
        while len(buf) - pos >= 11:
            size = int.from_bytes(buf[pos + 1:pos + 4], "big")
            if size > self._max:
                raise FlvError(f"FLV tag of {size} bytes")
            end = pos + 11 + size + 4
            if len(buf) < end:
                break
            ts = int.from_bytes(buf[pos + 4:pos + 7], "big") | buf[pos + 7] << 24
            kind = buf[pos] & 0x1F
            if kind in (AUDIO, VIDEO, SCRIPT):
                tags.append(Tag(kind, ts, bytes(buf[pos + 11:pos + 11 + size])))
            pos = end
        del buf[:pos]
        return tags


@dataclass(slots=True)
class OutTag:
    """A tag on the relay's output timeline, encoded once for every viewer."""

    kind: int
    ts: int
    keyframe: bool
    raw: bytes
    header: bool = False  # metadata or codec parameters: never skipped


class Viewer:
    """One HTTP viewer: a bounded queue of encoded tags that the relay fills and the response drains."""

    def __init__(self, max_lag_ms: int, max_bytes: int, max_skips: int = 5, keepalive_s: float = 5.0) -> None:
        self.max_lag_ms = max_lag_ms
        self.max_bytes = max_bytes
        self.max_skips = max_skips
        self.keepalive_s = keepalive_s
        self._initial: bytes | None = None
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self._first_ts: int | None = None  # media time of the oldest queued tag
        self._waiting_key = False
        self._event = asyncio.Event()
        self.closed = False
        self.skips = 0
        self.sent_bytes = 0
        self.id = uuid.uuid4().hex[:8]
        self.first_ms: int | None = None  # output time of the first media tag sent (the player's zero)
        self.clock_offset: int | None = None  # the offset last announced to this viewer

    def push_initial(self, data: bytes) -> None:
        """The stream's start (header, codec headers, cached GOP): always sent first, never skipped."""
        self._initial = data
        self._event.set()

    def offer(self, tag: OutTag) -> None:
        """Queue a live tag; never blocks. A viewer too far behind skips to the next keyframe."""
        if self.closed:
            return
        if tag.header:
            self._queue.append(tag.raw)
            self._bytes += len(tag.raw)
            self._event.set()
            return
        if self._waiting_key:
            if not tag.keyframe:
                return
            self._waiting_key = False
        if self._first_ts is not None and (tag.ts - self._first_ts > self.max_lag_ms
                                           or self._bytes + len(tag.raw) > self.max_bytes):
            self._queue.clear()
            self._bytes = 0
            self._first_ts = None
            self.skips += 1
            if self.skips > self.max_skips:
                log.info("flv viewer %s dropped: behind %d times", self.id, self.skips)
                self.close()
                return
            if not tag.keyframe:
                self._waiting_key = True
                return
        if self._first_ts is None and tag.kind != SCRIPT:
            self._first_ts = tag.ts
        self._queue.append(tag.raw)
        self._bytes += len(tag.raw)
        self._event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    async def chunks(self):
        """What the HTTP response sends: everything queued so far, joined; b"" as a keep-alive
        when nothing came for a while (so a gone client is noticed on a dark room too)."""
        while not self.closed:
            if self._initial is not None:
                data, self._initial = self._initial, None
                self.sent_bytes += len(data)
                yield data
                continue
            if not self._queue:
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), timeout=self.keepalive_s)
                except TimeoutError:
                    yield b""
                    continue
                if self.closed:
                    break
                if not self._queue:
                    continue
            data = b"".join(self._queue) if len(self._queue) > 1 else self._queue[0]
            self._queue.clear()
            self._bytes = 0
            self._first_ts = None
            self.sent_bytes += len(data)
            yield data


def relay_argv(source_url: str, rw_timeout_s: float = 10.0) -> list[str]:
    """ffmpeg pulling a live RTMP stream and writing it unchanged as FLV to stdout.

    Probing stays small (the FLV headers carry the codec parameters) and every packet is flushed
    as it is written. Its log is read for the input's start time (level-tagged info, no progress
    lines): output time + start = the publisher's time."""
    return [shutil.which("ffmpeg") or "ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info",
            "-rw_timeout", str(int(rw_timeout_s * 1_000_000)), "-probesize", "65536", "-analyzeduration", "500000",
            "-i", source_url, "-map", "0:v?", "-map", "0:a?", "-c", "copy",
            "-flvflags", "no_duration_filesize", "-flush_packets", "1", "-f", "flv", "pipe:1"]


_START = re.compile(rb"Duration: .*, start: (-?\d+(?:\.\d+)?)")


async def _drain(stream: asyncio.StreamReader, last: deque, on_start) -> None:
    """ffmpeg's log: the input's start time (seconds) to `on_start`, once; problems kept in `last`."""
    started = False
    while line := await stream.readline():
        if not started and (m := _START.search(line)):
            started = True
            on_start(float(m.group(1)))
        elif not line.startswith(b"[info]"):
            last.append(line)


class Relay:
    """One room's stream, pulled once and fanned out to its viewers."""

    def __init__(self, key: str, source_url: str, *, max_lag_s: float = 3.0, max_viewer_bytes: int = 8 << 20,
                 linger_s: float = 5.0, on_empty=None, still_live=None) -> None:
        self.key = key
        self.source_url = source_url
        self.max_lag_ms = int(max_lag_s * 1000)
        self.max_viewer_bytes = max_viewer_bytes
        self.linger_s = linger_s
        self.on_empty = on_empty
        # async (key) -> bool, asked whenever the source ends: False (the room was closed) ends
        # the relay and its viewers' responses instead of waiting for a publisher that won't come.
        self.still_live = still_live
        self.viewers: set[Viewer] = set()
        self.meta: bytes | None = None
        self.video_header: bytes | None = None
        self.audio_header: bytes | None = None
        self.gop: list[OutTag] = []
        self.task: asyncio.Task | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.tags_in = 0
        self.runs = 0
        self.started_at = time.monotonic()
        self._last_out: int | None = None  # output timestamp of the last tag sent
        self._last_in: dict[int, int] = {}
        self._offset: int | None = None  # output ts = input ts + offset within one continuous run
        self._source_start_ms: int | None = None  # publisher time of ffmpeg's time zero (this run)
        self._empty_since: float | None = None

    # ---- viewers ----
    def join(self) -> Viewer:
        viewer = Viewer(self.max_lag_ms, self.max_viewer_bytes)
        start = [FLV_HEADER, *(h for h in (self.meta, self.video_header, self.audio_header) if h)]
        if self.video_header and self.gop:
            if self.clock_offset is not None:
                firsts = [next((t.ts for t in self.gop if t.kind == kind), None) for kind in (VIDEO, AUDIO)]
                viewer.first_ms = min(ts for ts in firsts if ts is not None)
                start.append(self._clock(viewer).raw)
            start += [t.raw for t in self.gop]
        viewer.push_initial(b"".join(start))
        self.viewers.add(viewer)
        self._empty_since = None
        self.ensure_running()
        return viewer

    def leave(self, viewer: Viewer) -> None:
        viewer.close()
        self.viewers.discard(viewer)
        if not self.viewers:
            self._empty_since = time.monotonic()

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"flv-relay-{self.key}")

    # ---- the source ----
    async def _run(self) -> None:
        backoff = 0.5
        try:
            while True:
                if self._idle_expired():
                    break
                started = time.monotonic()
                await self._pull_once()
                if self._idle_expired():
                    break
                if self.still_live is not None and not await self._ask_still_live():
                    log.info("flv relay %s: the room is closed; ending %d viewer(s)", self.key, len(self.viewers))
                    break
                backoff = 0.5 if time.monotonic() - started > 10 else min(2.0, backoff * 2)
                await asyncio.sleep(backoff)
        finally:
            await self._kill()
            for viewer in list(self.viewers):
                viewer.close()
            if self.on_empty is not None:
                self.on_empty(self)

    async def _pull_once(self) -> None:
        self.runs += 1
        self._offset = None
        self._source_start_ms = None
        self.proc = await asyncio.create_subprocess_exec(
            *relay_argv(self.source_url), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        errors: deque[bytes] = deque(maxlen=5)
        stderr_task = asyncio.create_task(_drain(self.proc.stderr, errors, self._source_started))
        parser = FlvParser()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(self.proc.stdout.read(256 * 1024), timeout=1.0)
                except TimeoutError:
                    if self._idle_expired():
                        return
                    continue
                if not data:
                    break
                for tag in parser.feed(data):
                    self._on_tag(tag)
                if self._idle_expired():
                    return
        except FlvError as exc:
            log.warning("flv relay %s: %s", self.key, exc)
        finally:
            await self._kill()
            try:
                await asyncio.wait_for(stderr_task, timeout=2)
            except (TimeoutError, asyncio.CancelledError):
                pass
            if errors:
                log.info("flv relay %s: source ended: %s", self.key,
                         " | ".join(e.decode("utf-8", "replace").strip() for e in list(errors)[-2:]))

    def _source_started(self, seconds: float) -> None:
        self._source_start_ms = round(seconds * 1000)

    @property
    def clock_offset(self) -> int | None:
        """Output time minus the publisher's time for the current run (None until ffmpeg said)."""
        if self._offset is None or self._source_start_ms is None:
            return None
        return self._offset - self._source_start_ms

    async def _ask_still_live(self) -> bool:
        try:
            return bool(await self.still_live(self.key))
        except Exception:  # not known (e.g. Redis away): keep trying the source
            return True

    def _idle_expired(self) -> bool:
        return (not self.viewers and self._empty_since is not None
                and time.monotonic() - self._empty_since >= self.linger_s)

    async def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            log.warning("flv relay %s: ffmpeg %s did not exit", self.key, proc.pid)

    # ---- tags ----
    def _out_ts(self, tag: Tag) -> int:
        """The tag's time on the relay's continuous output timeline."""
        last = self._last_in.get(tag.kind)
        if self._offset is None or (last is not None and not (-1000 <= tag.ts - last <= 5000)):
            # A new source run, or a jump in the source's clock (a new publisher session):
            # continue one frame after what viewers already have.
            base = 0 if self._last_out is None else self._last_out + FRAME_MS
            self._offset = base - tag.ts
            self._last_in.clear()
        self._last_in[tag.kind] = tag.ts
        return max(0, tag.ts + self._offset)

    def _on_tag(self, tag: Tag) -> None:
        self.tags_in += 1
        if tag.kind == SCRIPT or tag.sequence_header:
            # Metadata and codec parameters: kept for viewers who join later; sent to those
            # watching when they are new or changed (viewers who joined before the source had
            # sent them, a publisher with new parameters), at the current output time.
            raw = tag.encode(0 if tag.kind == SCRIPT or self._last_out is None else self._last_out)
            attr = {SCRIPT: "meta", VIDEO: "video_header", AUDIO: "audio_header"}[tag.kind]
            before = getattr(self, attr)
            setattr(self, attr, raw)
            if before is None or before[11:] != raw[11:]:
                out = OutTag(tag.kind, self._last_out or 0, False, raw, header=True)
                for viewer in list(self.viewers):
                    viewer.offer(out)
            return
        ts = self._out_ts(tag)
        out = OutTag(tag.kind, ts, tag.keyframe, tag.encode(ts))
        self._last_out = ts
        if out.keyframe:
            self.gop = [out]
        elif self.gop and len(self.gop) < MAX_GOP_TAGS:
            self.gop.append(out)
        for viewer in list(self.viewers):
            if viewer.first_ms is None:
                viewer.first_ms = ts
            if self.clock_offset is not None and viewer.clock_offset != self.clock_offset:
                viewer.offer(self._clock(viewer))
            viewer.offer(out)
            if viewer.closed:
                self.leave(viewer)

    def _clock(self, viewer: Viewer) -> OutTag:
        """The viewer's ``onMtlClock`` tag for the current source run (never skipped)."""
        viewer.clock_offset = offset = self.clock_offset
        ts = self._last_out or 0
        tag = Tag(SCRIPT, ts, clock_body(offset or 0, viewer.first_ms or 0))
        return OutTag(SCRIPT, ts, False, tag.encode(ts), header=True)

    async def close(self) -> None:
        for viewer in list(self.viewers):
            self.leave(viewer)
        self._empty_since = time.monotonic() - self.linger_s
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        await self._kill()


@dataclass
class RelayHub:
    """The relays of one API process, and its viewer counts in Redis."""

    source_url_for: object  # callable(stream_key) -> RTMP URL of the room's live stream
    redis: object = None  # redis.asyncio client, for viewer counts (optional)
    max_lag_s: float = 3.0
    linger_s: float = 5.0
    max_viewers: int = 500
    still_live: object = None  # async (stream_key) -> bool: is the room still open
    relays: dict[str, Relay] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    _counts_task: asyncio.Task | None = None
    _published: dict | None = None

    @property
    def viewer_count(self) -> int:
        return sum(len(r.viewers) for r in self.relays.values())

    def join(self, key: str) -> tuple[Relay, Viewer]:
        relay = self.relays.get(key)
        if relay is None:
            relay = Relay(key, self.source_url_for(key), max_lag_s=self.max_lag_s, linger_s=self.linger_s,
                          on_empty=self._forget, still_live=self.still_live)
            self.relays[key] = relay
        viewer = relay.join()
        self._ensure_counts()
        return relay, viewer

    def _forget(self, relay: Relay) -> None:
        if self.relays.get(relay.key) is relay:
            del self.relays[relay.key]

    def counts(self) -> dict[str, str]:
        out = {}
        for key, relay in self.relays.items():
            out[f"v:{key}"] = str(len(relay.viewers))
            out[f"r:{key}"] = "1" if relay.proc is not None else "0"
        return out

    def _ensure_counts(self) -> None:
        if self.redis is not None and (self._counts_task is None or self._counts_task.done()):
            self._counts_task = asyncio.get_running_loop().create_task(self._publish_counts())

    async def _publish_counts(self) -> None:
        key = keys.flv_counts(self.name)
        while True:
            counts = self.counts()
            try:
                if counts != self._published:
                    async with self.redis.pipeline(transaction=True) as p:
                        p.delete(key)
                        if counts:
                            p.hset(key, mapping=counts)
                            p.expire(key, COUNTS_TTL_S)
                            p.sadd(COUNTS_INDEX, self.name)
                        await p.execute()
                    self._published = counts
                elif counts:
                    await self.redis.expire(key, COUNTS_TTL_S)
            except Exception as exc:  # Redis away: counts are informative only
                log.debug("flv viewer counts not published: %s", exc)
                self._published = None
            if not counts and not self.relays:
                return
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        for relay in list(self.relays.values()):
            await relay.close()
        if self._counts_task is not None:
            self._counts_task.cancel()
        if self.redis is not None:
            try:
                await self.redis.delete(keys.flv_counts(self.name))
                await self.redis.srem(COUNTS_INDEX, self.name)
            except Exception:
                pass


def flv_viewers(redis) -> dict[str, dict[str, int]]:
    """Every API process's FLV viewers and relays per stream key: {key: {"viewers", "relays"}}
    (sync Redis client)."""
    totals: dict[str, dict[str, int]] = {}
    names = sorted(n.decode() if isinstance(n, bytes) else n for n in redis.smembers(COUNTS_INDEX))
    if not names:
        return totals
    with redis.pipeline(transaction=False) as p:
        for name in names:
            p.hgetall(keys.flv_counts(name))
        hashes = p.execute()
    gone = [name for name, h in zip(names, hashes) if not h]
    if gone:  # processes that stopped (or have no relay): their hash expired
        redis.srem(COUNTS_INDEX, *gone)
    for counts in hashes:
        for field_, value in (counts or {}).items():
            field_ = field_.decode() if isinstance(field_, bytes) else field_
            what, _, key = field_.partition(":")
            entry = totals.setdefault(key, {"viewers": 0, "relays": 0})
            entry["viewers" if what == "v" else "relays"] += int(value)
    return totals
