"""Avatar preparation speed and memory on a 20 s 720p template (MuseTalk latents off).

    python -m bench.avatar_prep [--source VIDEO] [--seconds 20]

Without --source it builds a 720x1280 (portrait 720p) clip from ../shared/media/avatar-sun.mp4,
or from the bundled portrait's idle loop when ../shared is absent. Preparation and serving
each run in a child process so their peak RSS is their own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import emit
from core.media import run_ffmpeg
from core.settings import PROJECT_ROOT

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "prepare":
    from avatars.prepare import prepare
    import mediapipe  # a worker has it loaded already: its import is not preparation time
    t = time.perf_counter(); m = prepare(src, out); dt = time.perf_counter() - t
    print(json.dumps({"frames": m["frames"], "size": f"{m['width']}x{m['height']}", "seconds": dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
else:
    import numpy as np
    from avatars.store import Avatar
    from lipsync.engines import WarpEngine
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    av = Avatar(out); eng = WarpEngine()
    t = np.arange(500) / 25
    for k in range(500):
        eng.render_frame(av, k, float(0.5 + 0.5 * np.sin(2 * np.pi * 4 * t[k])), 0.0)
    print(json.dumps({"baseline_rss_mb": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_source(tmp: Path, seconds: float) -> Path:
    sun = PROJECT_ROOT.parent / "shared" / "media" / "avatar-sun.mp4"
    out = tmp / "template-720p.mp4"
    if sun.exists():
        vf = "scale=720:960,pad=720:1280:0:160,loop=loop=-1:size=550"
        run_ffmpeg(["-v", "error", "-y", "-i", str(sun), "-vf", vf, "-t", str(seconds), "-r", "25", "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out)])
    else:
        from avatars.demo import write_demo_portrait

        png = write_demo_portrait(tmp / "portrait.png")
        run_ffmpeg(["-v", "error", "-y", "-loop", "1", "-i", str(png), "-vf", "scale=720:720,pad=720:1280:0:280",
                    "-t", str(seconds), "-r", "25", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)])
    return out


def child(mode: str, src: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = args.source or make_source(tmp, args.seconds)
        prep = child("prepare", src, tmp / "avatar")
        serve = child("serve", src, tmp / "avatar")
        disk_mb = sum(p.stat().st_size for p in (tmp / "avatar").rglob("*") if p.is_file()) / 2**20
    emit("avatar_prep", {
        "source": str(args.source or "generated 720x1280 template"), "frames": prep["frames"], "size": prep["size"],
        "ms_per_frame": round(prep["seconds"] * 1000 / prep["frames"], 2), "target_ms_per_frame": 15,
        "prepare_peak_rss_mb": round(prep["peak_rss_mb"], 1), "avatar_on_disk_mb": round(disk_mb, 1),
        "serving_peak_rss_mb": round(serve["peak_rss_mb"], 1),
        "serving_rss_over_baseline_mb": round(serve["peak_rss_mb"] - serve["baseline_rss_mb"], 1),
    })


if __name__ == "__main__":
    main()
