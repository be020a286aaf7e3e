"""Many HTTP-FLV viewers on one room: does the room keep publishing at 25 fps, and does every viewer
get it, while one more viewer stalls (connects and never reads)?

    python -m bench.flv_viewers [--url http://127.0.0.1:8181] [--viewers 20] [--seconds 60]

Runs against a running fleet (`make run`). The room speaks every few seconds meanwhile (live
encoding, not only the pre-encoded idle loop). The publisher's own rate is measured by an
independent RTMP pull from the media server; each viewer counts the video frames it receives and
the longest wait between two. CPU of the API processes (which relay) and of their relay ffmpegs is
read from /proc over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from bench.common import emit
from bench.service import poll
from bench.viewer import count_video_frames
from core.flvrelay import VIDEO, FlvParser


@dataclass
class ViewerStats:
    frames: list[float] = field(default_factory=list)  # arrival times (monotonic) of video frames
    bytes: int = 0
    error: str | None = None

    def summary(self, skip_s: float = 3.0) -> dict:
        if len(self.frames) < 3:
            return {"frames": len(self.frames), "fps": 0.0, "max_gap_ms": None, "error": self.error}
        # Past the start: the cached GOP arrives as one burst.
        steady = [t for t in self.frames if t >= self.frames[0] + skip_s]
        span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
        gaps = np.diff(steady) if len(steady) > 1 else np.array([0.0])
        return {"frames": len(self.frames), "fps": round((len(steady) - 1) / span, 2) if span else 0.0,
                "max_gap_ms": round(float(gaps.max()) * 1000, 1), "mbytes": round(self.bytes / 1e6, 2),
                "error": self.error}


async def watch(client: httpx.AsyncClient, url: str, seconds: float, stats: ViewerStats) -> None:
    parser = FlvParser()
    end = time.monotonic() + seconds
    try:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw():
                stats.bytes += len(chunk)
                now = time.monotonic()
                for tag in parser.feed(chunk):
                    if tag.kind == VIDEO and not tag.sequence_header:
                        stats.frames.append(now)
                if now >= end:
                    return
    except Exception as exc:  # reported per viewer
        stats.error = f"{type(exc).__name__}: {exc}"


async def stall(url: str, seconds: float) -> int:
    """A viewer that connects and never reads: the server's send buffer to it fills up."""
    host, port = url.split("://", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    reader, writer = await asyncio.open_connection(host, int(port), limit=1024)
    writer.transport.pause_reading()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(seconds)
    writer.close()
    return 0


async def watch_many(url: str, viewers: int, seconds: float, stalled: int = 1) -> list[ViewerStats]:
    stats = [ViewerStats() for _ in range(viewers)]
    limits = httpx.Limits(max_connections=viewers + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(15, read=15), limits=limits) as client:
        await asyncio.gather(*(watch(client, url, seconds, s) for s in stats),
                             *(stall(url, seconds) for _ in range(stalled)))
    return stats


def listening_pids(port: int) -> list[int]:
    """Processes holding the listening socket of a TCP port (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(int(pid))
                    break
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


def _is_ffmpeg(pid: int) -> bool:
    return _cmdline(pid).split(b"\0")[0].endswith(b"ffmpeg")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--avatar", default="demo")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    client = httpx.Client(base_url=args.url, timeout=60, headers=headers)
    speech = poll(client, client.post("/v1/tts", json={"text": "Thank you. Please tell us more about that project."}
                                      ).json()["job_id"])["result"]
    room = client.post("/v1/rooms", json={"avatar_id": args.avatar, "username": "flv_viewers"}).json()
    flv = f"{args.url}/live/{room['stream_key']}.flv"
    deadline = time.monotonic() + 30
    while not client.get(f"/v1/rooms/{room['id']}").json().get("publishing") and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)

    port = int(args.url.rsplit(":", 1)[1].split("/")[0])
    api_pids = listening_pids(port)
    publisher: dict = {}
    puller = threading.Thread(target=lambda: publisher.update(count_video_frames(room["urls"]["rtmp"], args.seconds)))
    stop_talking = threading.Event()

    midway: dict = {}

    def talk():  # speech all along: the publisher encodes live frames, not only the idle loop
        while not stop_talking.wait(0.5):
            if not midway and time.monotonic() - t0 > args.seconds / 2:
                midway.update(client.get(f"/v1/rooms/{room['id']}").json())
                midway["relays"] = [c for p in api_pids for c in children(p) if _is_ffmpeg(c)]
            client.post(f"/v1/rooms/{room['id']}/say", json={"audio": speech["file"]})
            stop_talking.wait(speech["duration_s"] + 2.0)

    talker = threading.Thread(target=talk, daemon=True)
    # The API processes hold the listening socket (with uvicorn's own workers or supervisord's
    # fcgi-program, which holds it too but only supervises).
    api_pids = [p for p in api_pids if b"supervisord" not in _cmdline(p)] or api_pids
    api_pids += [c for p in api_pids for c in children(p) if not _is_ffmpeg(c) and c not in api_pids]
    cpu0 = {p: cpu_seconds(p) for p in api_pids}
    t0 = time.monotonic()
    puller.start()
    talker.start()
    stats = asyncio.run(watch_many(flv, args.viewers, args.seconds))
    wall = time.monotonic() - t0
    stop_talking.set()
    puller.join()
    cpu = {p: round(100 * (cpu_seconds(p) - cpu0[p]) / wall, 1) for p in api_pids if os.path.exists(f"/proc/{p}")}
    relay_cpu = {c: round(100 * cpu_seconds(c) / wall, 1) for c in midway.get("relays", [])
                 if os.path.exists(f"/proc/{c}")}
    client.delete(f"/v1/rooms/{room['id']}")
    summaries = [s.summary() for s in stats]
    fps = [s["fps"] for s in summaries]
    emit("flv_viewers", {
        "viewers": args.viewers, "stalled_viewers": 1, "seconds": args.seconds,
        "publisher_rtmp_pull": publisher,
        "viewer_fps": {"min": min(fps), "p50": float(np.median(fps)), "max": max(fps)},
        "viewer_max_gap_ms": max((s["max_gap_ms"] or 0) for s in summaries),
        "viewers_with_errors": [s for s in summaries if s["error"]],
        "every_viewer_received": all(s["fps"] >= 24.0 and not s["error"] for s in summaries),
        "room_viewers_reported_midway": midway.get("viewers_by_route"),
        "api_processes_cpu_percent": cpu,
        "relay_ffmpeg_cpu_percent": relay_cpu,
    })


if __name__ == "__main__":
    main()
