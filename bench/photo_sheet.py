"""Contact sheets of a photograph speaking through the real pipeline (image avatar + lip-sync job).

    python -m bench.photo_sheet OUT_DIR LABEL [--photo a.png | --video-frame clip.mp4@SECONDS]...
        [--speech speech.wav] [--seconds 8] [--frames 12]

Each photo is prepared as an image avatar in a scratch data dir, made to speak `--speech` (its
first `--seconds`) by the lip-sync job function, and frames are extracted from the MP4 at full
size: the `--frames` of widest opening and a spread of others, plus mouth crops. Writes
`<OUT_DIR>/<photo>-<LABEL>-mouths.png`, `...-frames.jpg` and prints JSON (opening heights measured
on the output against the mouth width, to compare before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench.common import emit


def _photo_from(spec: str, scratch: Path) -> Path:
    if "@" not in spec:
        return Path(spec)
    clip, at = spec.rsplit("@", 1)
    out = scratch / f"{Path(clip).stem}-{at}s.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", at, "-i", clip, "-frames:v", "1", str(out)], check=True)
    return out


def _pick(opens: np.ndarray, k: int) -> list[int]:
    """Half the frames of widest opening (spaced apart), half spread over the clip."""
    order = [int(i) for i in np.argsort(-opens)]
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= k // 2:
            break
        if all(abs(i - j) >= 5 for j in chosen):
            chosen.append(i)
    spread = np.linspace(0, len(opens) - 1, k - len(chosen) + 2)[1:-1].astype(int)
    return sorted(set(chosen) | {int(i) for i in spread})


def _tile(images: list[np.ndarray], cols: int) -> np.ndarray:
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for n, img in enumerate(images):
        r, c = divmod(n, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return sheet


def _render(photo: Path, speech: Path, seconds: float, scratch: Path) -> tuple[Path, dict, Path]:
    os.environ["MTL_DATA_DIR"] = str(scratch / "data")
    from core.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from workers.avatar import prepare_avatar
    from workers.lipsync import render_lipsync_video

    up = settings.kind_dir("uploads")
    (up / photo.name).write_bytes(photo.read_bytes())
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(speech), "-t", str(seconds), "-ac", "1",
                    str(up / "speech.wav")], check=True)
    avatar_id = "".join(ch if ch.isalnum() else "-" for ch in photo.stem)[:40]
    prepare_avatar(f"uploads/{photo.name}", avatar_id, {})
    result = render_lipsync_video(avatar_id, f"sheet-{avatar_id}", audio="uploads/speech.wav", engine="warp")
    return settings.data_dir / result["file"], result, settings.data_dir / "avatars" / avatar_id


def sheet(photo: Path, speech: Path, out_dir: Path, label: str, seconds: float, k: int) -> dict:
    from avatars.store import Avatar

    scratch = Path(tempfile.mkdtemp(prefix="photo-sheet-"))
    video, result, adir = _render(photo, speech, seconds, scratch)
    mouth = json.loads(video.with_suffix(".mouth.json").read_text())["frames"]
    picks = _pick(np.array([f["open"] for f in mouth]), k)
    avatar = Avatar(adir)
    frames, crops = [], []
    for i in picks:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-vf", f"select=eq(n\\,{i})", "-frames:v",
                              "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
        frame = np.frombuffer(raw, np.uint8).reshape(avatar.height, avatar.width, 3).copy()
        lm = avatar.landmarks_at(result["cycle_start"] + i)
        mw = float(np.ptp(lm[[61, 291], 0]))
        cx, cy = lm[[61, 291]].mean(axis=0)
        half = int(0.9 * mw)
        x1, y1 = int(cx - half), int(cy - 0.6 * half)
        crop = cv2.resize(frame[max(0, y1):y1 + 2 * half, max(0, x1):x1 + 2 * half], (256, 256),
                          interpolation=cv2.INTER_CUBIC)
        cv2.putText(crop, f"f{i} o{mouth[i]['open']:.2f}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        crops.append(crop)
        frames.append(cv2.resize(frame, (avatar.width // 2, avatar.height // 2), interpolation=cv2.INTER_AREA))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{photo.stem}-{label}"
    cv2.imwrite(str(out_dir / f"{stem}-mouths.png"), _tile(crops, 6))
    cv2.imwrite(str(out_dir / f"{stem}-frames.png"), _tile(frames[:8], 4))
    kept = out_dir / f"{stem}.mp4"
    kept.write_bytes(video.read_bytes())
    return {"photo": photo.name, "frames": picks, "mouths": str(out_dir / f"{stem}-mouths.png"),
            "sheet": str(out_dir / f"{stem}-frames.png"), "video": str(kept)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("label")
    parser.add_argument("--photo", action="append", default=[])
    parser.add_argument("--video-frame", action="append", default=[])
    parser.add_argument("--speech", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="photo-src-"))
    photos = [Path(p) for p in args.photo] + [_photo_from(v, scratch) for v in args.video_frame]
    emit("photo_sheet", {"label": args.label, "sheets": [sheet(p, args.speech, args.out_dir, args.label,
                                                                args.seconds, args.frames) for p in photos]})


if __name__ == "__main__":
    main()
