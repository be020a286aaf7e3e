"""API under load: N concurrent clients enqueue TTS (`POST /v1/tts`) and poll `GET /v1/jobs/{id}`.

    python -m bench.api_load [--url http://127.0.0.1:8181] [--clients 200] [--seconds 30] [--poll-ms 250]

Each client loops: enqueue a short utterance, poll its job every --poll-ms until it is finished
or --max-polls reads were made, then start again. Runs against an already running fleet (so the
TTS workers are busy for real); jobs it leaves queued are cancelled at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import aiohttp

from bench.common import emit

PHRASES = ["欢迎来到直播间。", "Thanks for joining us today.", "请在评论区留言。", "Let us take the next question."]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def client(session, base: str, deadline: float, poll_s: float, max_polls: int, stats: dict, idx: int):
    n = 0
    # Clients arrive spread over the first second (a ramp-up), not in one synchronised burst;
    # poll intervals jitter by +-10% as real clients' timers do.
    await asyncio.sleep(random.uniform(0, 1.0))
    while time.monotonic() < deadline:
        n += 1
        text = f"{random.choice(PHRASES)} {idx}-{n}"
        t0 = time.perf_counter()
        try:
            async with session.post(f"{base}/v1/tts", json={"text": text}) as r:
                body = await r.json()
                ok = r.status == 202
        except Exception as exc:  # a refused/reset connection is an error, not a crash
            stats["errors"].append(f"enqueue: {exc!r}")
            continue
        stats["enqueue"].append(time.perf_counter() - t0)
        if not ok:
            stats["errors"].append(f"enqueue HTTP {r.status}")
            continue
        stats["jobs"].append(body["job_id"])
        for _ in range(max_polls):
            await asyncio.sleep(poll_s * random.uniform(0.9, 1.1))
            if time.monotonic() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                async with session.get(f"{base}/v1/jobs/{body['job_id']}") as r:
                    job = await r.json()
                    ok = r.status == 200
            except Exception as exc:
                stats["errors"].append(f"status: {exc!r}")
                continue
            stats["status"].append(time.perf_counter() - t0)
            if not ok:
                stats["errors"].append(f"status HTTP {r.status}")
            elif job["status"] in ("finished", "failed"):
                stats["finished"] += job["status"] == "finished"
                break


async def cancel_leftovers(session, base: str, job_ids: list[str]) -> int:
    cancelled = 0
    for job_id in job_ids:
        async with session.delete(f"{base}/v1/jobs/{job_id}") as r:
            cancelled += r.status == 200
    return cancelled


async def run(args) -> dict:
    stats = {"enqueue": [], "status": [], "errors": [], "jobs": [], "finished": 0}
    connector = aiohttp.TCPConnector(limit=args.clients + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        start = time.monotonic()
        deadline = start + args.seconds
        await asyncio.gather(*[client(session, args.url, deadline, args.poll_ms / 1000, args.max_polls, stats, i)
                               for i in range(args.clients)])
        elapsed = time.monotonic() - start
        cancelled = await cancel_leftovers(session, args.url, stats["jobs"])
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    total = len(stats["enqueue"]) + len(stats["status"])
    return {
        "clients": args.clients, "seconds": round(elapsed, 1), "poll_ms": args.poll_ms,
        "requests": total, "requests_per_s": round(total / elapsed, 1),
        "enqueue": {"count": len(stats["enqueue"]), "p50_ms": ms(_pct(stats["enqueue"], 0.5)),
                    "p99_ms": ms(_pct(stats["enqueue"], 0.99)), "max_ms": ms(max(stats["enqueue"], default=0))},
        "status": {"count": len(stats["status"]), "p50_ms": ms(_pct(stats["status"], 0.5)),
                   "p99_ms": ms(_pct(stats["status"], 0.99)), "max_ms": ms(max(stats["status"], default=0))},
        "errors": len(stats["errors"]), "error_samples": stats["errors"][:5],
        "tts_jobs_finished_during_run": stats["finished"], "leftover_jobs_cancelled": cancelled,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8181")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--poll-ms", type=int, default=250)
    parser.add_argument("--max-polls", type=int, default=8)
    emit("api_load", asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
