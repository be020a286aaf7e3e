"""CPU and memory of the fleet's processes on this host, read from /proc (Linux; None elsewhere).

CPU is the share of one core used since the previous reading of the same process (the console's
Fleet page reads every few seconds), or since the process started on the first reading."""

from __future__ import annotations

import os
import time

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_LAST: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, monotonic time) at the last reading


def _cpu_seconds_and_start(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 onwards
    utime, stime, start_ticks = int(fields[11]), int(fields[12]), int(fields[19])
    return (utime + stime) / _CLK, start_ticks / _CLK


def _rss_mb(pid: int) -> float | None:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def usage(pid: int) -> dict | None:
    """{"cpu_percent", "rss_mb"} of a live process on this host, or None."""
    try:
        cpu, start = _cpu_seconds_and_start(pid)
        rss = _rss_mb(pid)
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        _LAST.pop(pid, None)
        return None
    now = time.monotonic()
    last = _LAST.get(pid)
    _LAST[pid] = (cpu, now)
    if last is not None and now - last[1] > 0.2 and cpu >= last[0]:
        share = (cpu - last[0]) / (now - last[1])
    else:
        share = cpu / max(1e-3, uptime - start)
    return {"cpu_percent": round(100 * share, 1), "rss_mb": rss}
