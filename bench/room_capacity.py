"""How many rooms one machine holds: idle rooms at 25 fps, and rooms speaking at once at 720p.

    python -m bench.room_capacity [--url http://127.0.0.1:8181] [--idle-rooms 20] [--speaking-rooms 2]

Against a running fleet (`make run`). Every room is pulled by a viewer for a fixed wall time and
the frames that arrive are counted (a publisher that falls behind shows as < 25 fps); CPU and
RSS of the stream worker processes of the fleet started from this checkout are read from /proc;
speaking rooms are measured once every one of them speaks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench.avatar_prep import make_source
from bench.common import emit
from bench.service import SHARED_MEDIA, ensure_avatar, poll
from core.media import run_ffmpeg
from bench.viewer import count_video_frames

TICK = os.sysconf("SC_CLK_TCK")
LONG_TEXT = ("欢迎大家来到今天的直播间，我们今天要聊一聊数字人技术。数字人可以在直播间里回答问题，"
             "介绍产品，还可以陪伴大家聊天。接下来我会详细介绍它的工作原理，请大家耐心听我讲完。")


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def stream_pids() -> list[int]:
    """The stream workers of the fleet `make run` started from this checkout (supervisord runs its
    programs in the project directory): other checkouts' fleets and test fleets on a shared machine
    are not counted."""
    out = subprocess.run(["pgrep", "-f", r"python -m workers stream"], capture_output=True, text=True).stdout
    pids = []
    for p in out.split():
        try:
            # Python processes only (a shell or pgrep's own command line may match too).
            ours = Path(f"/proc/{p}/cwd").resolve() == PROJECT_ROOT
            if ours and Path(f"/proc/{p}/comm").read_text().startswith("python"):
                pids.append(int(p))
        except OSError:
            continue  # ended meanwhile
    return pids


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def measure(client, rooms: list[dict], seconds: float) -> dict:
    pids = stream_pids()
    before, t0 = cpu_ticks(pids), time.monotonic()
    with ThreadPoolExecutor(max_workers=len(rooms)) as pool:
        results = list(pool.map(lambda r: count_video_frames(r["urls"]["rtmp"], seconds), rooms))
    cpu = (cpu_ticks(pids) - before) / TICK / (time.monotonic() - t0)
    fps = [r["fps"] for r in results]
    gaps = [r["max_gap_ms"] or 0 for r in results]
    return {"rooms": len(rooms), "fps_min": min(fps), "fps_median": float(np.median(fps)),
            "rooms_at_25fps": sum(1 for f in fps if f >= 24.0), "max_frame_gap_ms": max(gaps),
            "stream_workers": len(pids), "cpu_cores_used": round(cpu, 2),
            "cpu_per_room_pct": round(100 * cpu / len(rooms), 1), "rss_mb": round(rss_mb(pids), 1),
            "rss_per_room_mb": round(rss_mb(pids) / len(rooms), 1)}


def talking_source(clip: Path, tmp: Path, seconds: float) -> Path:
    """A talking clip with its own speech, looped and padded into a 720x1280 live-room frame."""
    out = tmp / "talking-720p.mp4"
    run_ffmpeg(["-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip), "-t", str(seconds), "-vf",
                "scale=720:1280:force_original_aspect_ratio=decrease,pad=720:1280:(ow-iw)/2:(oh-ih)/2",
                "-r", "25", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)])
    return out


def open_rooms(client, n: int, avatar: str) -> list[dict]:
    rooms = [client.post("/v1/rooms", json={"avatar_id": avatar, "username": f"cap{i}"}).json() for i in range(n)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        leased = [client.get(f"/v1/rooms/{r['id']}").json().get("publisher") for r in rooms]
        if all(leased):
            break
        time.sleep(0.5)
    time.sleep(3)
    return rooms


def speaking(client, rooms: list[dict], timeout_s: float = 10.0) -> list[str]:
    """The engines of the rooms' speech once every room speaks (speech_start), or after `timeout_s`:
    a fixed wait let a busy machine start some rooms' speech inside the window, which then counted
    idle frames (remuxed, far cheaper) as speaking ones."""
    deadline = time.monotonic() + timeout_s
    while True:
        engines = [e.get("engine") for r in rooms for e in client.get(f"/v1/rooms/{r['id']}/events").json()
                   if e["event"] == "speech_start"]
        if len(engines) >= len(rooms) or time.monotonic() > deadline:
            return engines
        time.sleep(0.2)


def close(client, rooms):
    for r in rooms:
        client.delete(f"/v1/rooms/{r['id']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--idle-rooms", type=int, default=20)
    parser.add_argument("--speaking-rooms", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--talking", type=Path, nargs="?", const=SHARED_MEDIA / "real-talk-2.mp4",
                        help="speaking rooms use an avatar enrolled from this talking clip (exemplar engine); "
                             "default without the flag: the warp fallback on a closed-mouth template")
    args = parser.parse_args()
    client = httpx.Client(base_url=args.url, timeout=120)
    figures = {}
    if args.idle_rooms:
        rooms = open_rooms(client, args.idle_rooms, "demo")
        try:
            figures["idle"] = {"avatar": "demo 512x512", **measure(client, rooms, args.seconds)}
        finally:
            close(client, rooms)
    if args.speaking_rooms:
        with tempfile.TemporaryDirectory() as tmp:
            if args.talking:
                avatar = ensure_avatar(client, "bench720talk", talking_source(args.talking, Path(tmp), 20.0))
            else:
                avatar = ensure_avatar(client, "bench720", make_source(Path(tmp), 20.0))
        speech = poll(client, client.post("/v1/tts", json={"text": LONG_TEXT}).json()["job_id"])
        rooms = open_rooms(client, args.speaking_rooms, avatar["id"])
        try:
            for r in rooms:
                client.post(f"/v1/rooms/{r['id']}/say", json={"audio": speech["result"]["file"]}).raise_for_status()
            started = time.monotonic()
            engines = speaking(client, rooms)
            waited = time.monotonic() - started
            # The window ends before the first room's speech does, so every frame counted is spoken.
            window = min(args.seconds, speech["result"]["duration_s"] - 1.5 - waited)
            publishers = [client.get(f"/v1/rooms/{r['id']}").json()["publisher"] for r in rooms]
            figures["speaking_720p"] = {"avatar": f"{avatar['manifest']['width']}x{avatar['manifest']['height']}",
                                        "engines": engines,
                                        "speech_s": speech["result"]["duration_s"],
                                        "speech_start_wait_s": round(waited, 2), "window_s": round(window, 2),
                                        "publisher_processes": len(set(publishers)),
                                        **measure(client, rooms, window)}
        finally:
            close(client, rooms)
    emit("room_capacity", {**figures, "targets": {"idle_rooms": 20, "speaking_rooms_720p": 2}})


if __name__ == "__main__":
    main()
