"""Soak: rooms speaking and idling and jobs flowing for a long time against a running fleet; is
memory flat, is disk flat once the janitor runs, is any job lost?

    MTL_TTS_TTL_S=300 MTL_ASR_TTL_S=300 MTL_UPLOADS_TTL_S=300 MTL_LIPSYNC_TTL_S=300 \\
    MTL_JANITOR_INTERVAL_S=60 make run            # short retention, so the janitor's effect shows
    python -m bench.soak --minutes 30 [--url http://127.0.0.1:8181] [--speaking-rooms 1 --talking-rooms 1
                                                                      --idle-rooms 2]

Every few seconds it enqueues TTS, ASR and (less often) lip-sync jobs, makes the speaking rooms
talk and sends the conversation rooms a message (answered by the script responder). Every
`--sample-s` it records the RSS of every process of the fleet under test (the descendants of its
supervisord, by kind; other fleets on the machine are not counted), the size of the data directory
and the free disk. At the end it waits for every job it submitted and counts those that never ended
(lost) or failed. Printed figures: RSS per process kind and disk at the first sample after warm-up
and at the last, their growth, and the job counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import httpx

from bench.common import emit
from core.settings import get_settings

log = logging.getLogger("bench.soak")
TEXTS = ["大家好，欢迎来到今天的直播间。", "Thank you for joining us today.", "我们现在开始面试。"]
KINDS = ("api", "tts", "asr", "avatar", "lipsync", "feedback", "converse", "stream", "janitor", "redis-server", "nginx")


def _kind(cmdline: str) -> str | None:
    for kind in KINDS:
        if f"workers {kind}" in cmdline or (kind == "api" and "-m api" in cmdline) or \
                (kind == "janitor" and "core.janitor" in cmdline) or (kind in ("redis-server", "nginx") and kind in cmdline):
            return kind
    return None


def fleet_pids(data_dir: Path) -> set[str] | None:
    """The processes of the fleet under test: its supervisord and every descendant (other fleets on
    the machine, e.g. a test suite's, are not counted). None: no supervisord pid file (count all)."""
    try:
        root = (data_dir / "supervisor" / "supervisord.pid").read_text().strip()
    except OSError:
        return None
    parents: dict[str, str] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
    mine = {root}
    for _ in range(6):  # supervisord -> program -> its children (ffmpeg, nginx workers)
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    return mine


def rss_by_kind(pids: set[str] | None = None) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (pids is not None and pid not in pids):
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            kind = _kind(cmd)
            if kind is None:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    totals[kind] += int(line.split()[1]) / 1024
        except OSError:
            continue
    return {k: round(v, 1) for k, v in sorted(totals.items())}


def disk_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout.split()
    return float(out[0]) if out else 0.0


def sample(client: httpx.Client, data_dir: Path, t0: float) -> dict:
    r = client.get("/v1/fleet")
    fleet = r.json() if r.status_code == 200 else {}
    total, redis, logs = disk_mb(data_dir), disk_mb(data_dir / "redis"), disk_mb(data_dir / "logs")
    # Redis' append-only file grows until its rewrite (at twice its size after the last one, 64 MB
    # at first) and logs until their rotation: both bounded, shown apart from the files the janitor keeps.
    return {"t_min": round((time.monotonic() - t0) / 60, 2), "rss_mb": rss_by_kind(fleet_pids(data_dir)),
            "disk_mb": total, "disk_files_mb": round(total - redis - logs, 1), "redis_dir_mb": redis,
            "logs_mb": logs,
            "free_disk_mb": fleet.get("free_disk_mb")}


class Load:
    def __init__(self, client: httpx.Client, speaking: list[dict], talking: list[dict]) -> None:
        self.client, self.speaking, self.talking = client, speaking, talking
        self.jobs: list[str] = []
        self.tts_jobs: list[str] = []
        self.refused = 0
        self.k = 0
        self.last_tts: str | None = None

    def _track(self, r: httpx.Response) -> str | None:
        if r.status_code != 202:
            self.refused += 1
            return None
        self.jobs.append(r.json()["job_id"])
        return self.jobs[-1]

    def step(self) -> None:
        """One tick: a TTS job; an ASR job on an earlier TTS output; a lip-sync job every 6th tick;
        the speaking rooms talk every 3rd tick."""
        self.k += 1
        job = self._track(self.client.post("/v1/tts", json={"text": f"{TEXTS[self.k % len(TEXTS)]} {self.k}"}))
        if job:
            self.tts_jobs.append(job)
        if len(self.tts_jobs) > 3:
            view = self.client.get(f"/v1/jobs/{self.tts_jobs[-4]}").json()
            if view.get("status") == "finished":
                self.last_tts = view["result"]["file"]
        if self.last_tts:
            self._track(self.client.post("/v1/asr", data={"source": self.last_tts}))
            if self.k % 6 == 0:
                self._track(self.client.post("/v1/lipsync", json={"avatar_id": "demo", "audio": self.last_tts}))
        if self.k % 3 == 0:
            for room in self.speaking:
                self.client.post(f"/v1/rooms/{room['id']}/say", json={"text": TEXTS[self.k % len(TEXTS)]})
        if self.k % 4 == 0:  # conversation rooms get a message (the script answers, a converse job)
            for room in self.talking:
                r = self.client.post(f"/v1/rooms/{room['id']}/messages", json={"text": f"我的回答是第{self.k}个。"})
                self._track(r)


def final_status(client: httpx.Client, job_id: str, timeout: float = 300.0) -> str:
    """The job's end state, waiting for it; the API's rate limit is honoured (Retry-After)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        if r.status_code == 429:
            time.sleep(float(r.headers.get("Retry-After", "1")))
            continue
        status = r.json().get("status") if r.status_code == 200 else f"http_{r.status_code}"
        if status not in ("queued", "started", "deferred", "scheduled"):
            return status
        time.sleep(0.5)
    return "timeout"


def run(args) -> dict:
    client = httpx.Client(base_url=args.url, timeout=60)
    data_dir = get_settings().data_dir
    n = args.speaking_rooms + args.talking_rooms + args.idle_rooms
    rooms = [client.post("/v1/rooms", json={"username": f"soak{i}", "ttl_s": int(args.minutes * 60 + 600),
                                            "responder": "script"}).json() for i in range(n)]
    load = Load(client, rooms[:args.speaking_rooms],
                rooms[args.speaking_rooms:args.speaking_rooms + args.talking_rooms])
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    samples, next_sample = [], t0 + args.warmup_s
    while time.monotonic() < deadline:
        load.step()
        if time.monotonic() >= next_sample:
            samples.append(sample(client, data_dir, t0))
            # Each sample is logged as it is taken, so a long run that is cut short still tells.
            log.info("sample %s", json.dumps(samples[-1]))
            next_sample += args.sample_s
        time.sleep(args.every_s)
    ended = [final_status(client, j) for j in load.jobs]
    for room in rooms:
        client.delete(f"/v1/rooms/{room['id']}")
    return {"samples": samples, "jobs": len(load.jobs), "refused": load.refused,
            "finished": ended.count("finished"), "failed": ended.count("failed"),
            "lost": len(ended) - ended.count("finished") - ended.count("failed"),
            "lost_states": sorted(set(ended) - {"finished", "failed"})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--speaking-rooms", type=int, default=1)
    parser.add_argument("--talking-rooms", type=int, default=1, help="rooms answering messages (conversations)")
    parser.add_argument("--idle-rooms", type=int, default=2)
    parser.add_argument("--every-s", type=float, default=3.0)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    first, last = result["samples"][0], result["samples"][-1]
    growth = {k: round(last["rss_mb"].get(k, 0) - v, 1) for k, v in first["rss_mb"].items()}
    emit("soak", {"minutes": args.minutes, "first": first, "last": last, "rss_growth_mb": growth,
                  "disk_growth_mb": round(last["disk_mb"] - first["disk_mb"], 1),
                  "files_growth_mb": round(last["disk_files_mb"] - first["disk_files_mb"], 1),
                  **{k: result[k] for k in ("jobs", "refused", "finished", "failed", "lost", "lost_states")},
                  "samples": result["samples"]})


if __name__ == "__main__":
    main()
