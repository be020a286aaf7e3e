"""How well enrollment's person check (lipsync/identity.py) tells presenters apart.

    python -m bench.identity [--media ../shared/media] [--portrait-talk talking-portrait.mp4]

Cuts the shared clips into pieces (two halves of each short clip, long-cameron's four framings),
reads each piece's presenter, and scores every pair. Pairs are split into a tuning set (avatar-sun,
real-talk-2, long-cameron, the demo portrait), on which TOLERANCE was chosen (1.25 x the largest
same-person difference per component), and a held-out set (anything with real-talk-5, pd-reagan,
pd-tedlieu or the portrait speaking) on which it is reported. Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import tempfile
from pathlib import Path

from avatars.demo import write_demo_portrait
from lipsync.identity import TOLERANCE, distance, presenter_of_file
from bench.common import emit

PIECES = {  # name: (clip, start s, length s, person)
    "sun1": ("avatar-sun", 0, 11, "sun"), "sun2": ("avatar-sun", 11, 11, "sun"),
    "rt2a": ("real-talk-2", 0, 2.5, "rt2"), "rt2b": ("real-talk-2", 2.5, 2.5, "rt2"),
    "rt5a": ("real-talk-5", 0, 2.4, "rt5"), "rt5b": ("real-talk-5", 2.4, 2.5, "rt5"),
    "cam1": ("long-cameron", 1, 15, "cam"), "cam2": ("long-cameron", 20, 25, "cam"),
    "cam3": ("long-cameron", 47, 16, "cam"), "cam4": ("long-cameron", 65, 25, "cam"),
    "rea1": ("pd-reagan-farewell", 0, 13, "rea"), "rea2": ("pd-reagan-farewell", 13, 13, "rea"),
    "ted1": ("pd-tedlieu-wda", 0, 30, "ted"), "ted2": ("pd-tedlieu-wda", 30, 30, "ted"),
}
HELD_OUT = ("rt5", "rea", "ted", "astrotalk")


def _pieces(media: Path, scratch: Path, portrait_talk: Path | None) -> dict[str, tuple[Path, str]]:
    out = {"astro": (write_demo_portrait(scratch / "astro.png"), "astro")}
    if portrait_talk is not None:
        out["astrotalk"] = (portrait_talk, "astro")
    for name, (clip, start, length, person) in PIECES.items():
        path = scratch / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(length), "-i",
                        str(media / f"{clip}.mp4"), "-c:v", "libx264", "-preset", "ultrafast", "-an", str(path)],
                       check=True)
        out[name] = (path, person)
    return out


def _summary(pairs: list[dict]) -> dict:
    same = [p["score"] for p in pairs if p["same"]]
    other = [p["score"] for p in pairs if not p["same"]]
    return {"same_pairs": len(same), "same_refused": sum(s > 1 for s in same), "same_max": max(same, default=None),
            "other_pairs": len(other), "other_refused": sum(s > 1 for s in other), "other_min": min(other, default=None),
            "other_accepted": [(p["a"], p["b"]) for p in pairs if not p["same"] and p["score"] <= 1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    parser.add_argument("--portrait-talk", type=Path, default=None, help="the demo portrait speaking (an MP4)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="identity-"))
    pieces = _pieces(args.media, scratch, args.portrait_talk)
    seen = {name: presenter_of_file(path) for name, (path, _person) in pieces.items()}
    pairs = []
    for a, b in itertools.combinations(sorted(seen), 2):
        if seen[a] is None or seen[b] is None:
            continue
        d = distance(seen[a], seen[b])
        held = any(n.startswith(h) for n in (a, b) for h in HELD_OUT)
        pairs.append({"a": a, "b": b, "same": pieces[a][1] == pieces[b][1], "held_out": held, **d})
    emit("identity", {"tolerance": TOLERANCE, "threshold": 1.0,
                      "tuning": _summary([p for p in pairs if not p["held_out"]]),
                      "held_out": _summary([p for p in pairs if p["held_out"]]), "pairs": pairs})


if __name__ == "__main__":
    main()
