"""Do a photograph's lips shut on m, b and p? The `warp` engine on a photo avatar speaking the fleet's
own synthesised speech (with its phone times), every frame meshed by the service's face mesh.

    python -m bench.photo_closure [--photo a.png] [--out DIR]

Per language (zh, en), three renders of the same speech: `closing` (the engine as it is: the phones'
closures shut the lips), `no_closing` (the phones lower the opening but the closures are not drawn:
what the warp did before it could close a photo's parted lips) and `no_phones` (the acoustic mouth
alone). For each: the share of m/b/p onsets with the inner-lip gap under 10% of the mouth's width
within one frame, and on open vowels the median gap and the share of frames showing at least 40% of
the photo's own teeth. The photo is the bundled demo portrait unless `--photo` is given. `--out`
writes full-size frames and a before/after contact sheet of mouth crops at closures and vowels.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from bench.common import emit

ZH = "我们不卖便宜货，买一送一，欢迎来到直播间，爸爸妈妈都可以帮忙。"
EN = "My mom bought a big map, please be patient, maybe we will probably buy more paper by Monday."
LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR
SHUT = 0.10  # inner-lip gap over mouth width that reads as shut


@functools.lru_cache(maxsize=4)
def synthesised(text: str, language: str) -> tuple[np.ndarray, list]:
    """16 kHz speech and its phones from the fleet's own voices, once per text (Piper draws its
    durations at random: renders to be compared must share the speech)."""
    from core.settings import get_settings
    from workers.tts import speech_16k

    speech, phones = speech_16k(get_settings(), text, language)
    return speech, phones or []


def gap_over_width(lm: np.ndarray | None) -> float:
    return np.nan if lm is None else float(np.linalg.norm(lm[13] - lm[14]) / np.linalg.norm(lm[61] - lm[291]))


def teeth(frame: np.ndarray, lm: np.ndarray) -> int:
    """Tooth pixels between the inner lips `lm` has: bright and hardly red (lips and skin are warm)."""
    from avatars.face import INNER_LOWER, INNER_UPPER

    inside = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(np.concatenate([lm[INNER_UPPER], lm[INNER_LOWER][::-1]])).astype(np.int32)], 1)
    px = frame.astype(np.float32)
    return int(((px @ LUMA > 190.0) & (px[..., 2] - px[..., 1] < 28.0) & (inside > 0)).sum())


def closed_share(meshes: list, phones: list) -> tuple[float, int]:
    """Share of m/b/p onsets with the lips shut within one frame, and how many onsets."""
    from lipsync.visemes import BILABIAL

    ratio = np.array([gap_over_width(lm) for lm in meshes])
    onsets = [int(round(p.start * 25)) for p in phones if p.symbol in BILABIAL]
    return float(np.mean([np.nanmin(ratio[max(0, k - 1):k + 2]) < SHUT for k in onsets])), len(onsets)


def render(avatar, speech: np.ndarray, phones: list, mode: str):
    """(frames, meshes, track) of the warp engine on `avatar` in one of the three modes."""
    from bench.redub import mesh_all
    from lipsync.engines import WarpEngine
    from lipsync.mouth import analyse, frame_count
    from lipsync.visemes import with_phones

    n = frame_count(speech.size)
    track = analyse(speech, 25, n)
    if mode != "no_phones":
        track = with_phones(track, phones)
    drawn = replace(track, closure=None) if mode == "no_closing" else track
    frames = list(WarpEngine().frames(avatar, speech, 0, n, drawn))
    return frames, mesh_all(frames), track


def _vowel_figures(avatar, frames, meshes, track) -> dict:
    own = teeth(avatar.frame(0), avatar.landmarks_at(0))
    ks = [k for k in range(len(frames)) if track.vowels is not None and track.vowels[k] >= 0.6
          and track.closure[k] == 0.0 and meshes[k] is not None]
    return {"vowel_frames": len(ks), "vowel_gap_median": round(float(np.median([gap_over_width(meshes[k]) for k in ks])), 3)
            if ks else None, "vowel_teeth_share": round(float(np.mean([teeth(frames[k], meshes[k]) >= 0.4 * own
                                                                       for k in ks])), 3) if ks else None}


def _crop(frame: np.ndarray, lm: np.ndarray, label: str) -> np.ndarray:
    mw = float(np.linalg.norm(lm[61] - lm[291]))
    cx, cy = lm[[61, 291]].mean(axis=0)
    half = int(0.95 * mw)
    x1, y1 = max(0, int(cx - half)), max(0, int(cy - 0.7 * half))
    crop = cv2.resize(frame[y1:y1 + 2 * half, x1:x1 + 2 * half], (300, 300), interpolation=cv2.INTER_CUBIC)
    for colour, thick in (((0, 0, 0), 3), ((0, 255, 255), 1)):
        cv2.putText(crop, label, (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, thick)
    return crop


def _sheet_rows(avatar, language: str, runs: dict, out: Path) -> list[np.ndarray]:
    """Before (no_closing) and after (closing) mouth crops at four closures and two open vowels;
    the full frames saved beside the sheet."""
    _frames, meshes, track = runs["closing"]
    ratio = np.array([gap_over_width(lm) for lm in meshes])
    shut = [k for k in range(len(ratio)) if track.closure[k] == 1.0]
    shut = [shut[int(i)] for i in np.linspace(0, len(shut) - 1, min(4, len(shut)))]
    vowels = [int(k) for k in np.argsort(-np.nan_to_num(ratio)) if track.closure[k] == 0.0][:2]
    rows = []
    for mode, name in (("no_closing", "before"), ("closing", "after")):
        frames, mode_meshes, _ = runs[mode]
        cells = []
        for k in shut + vowels:
            cv2.imwrite(str(out / f"{language}-{name}-f{k:03d}.png"), frames[k])
            what = "m/b/p" if k in shut else "vowel"
            gap = gap_over_width(mode_meshes[k])
            cells.append(_crop(frames[k], avatar.landmarks_at(k), f"{name} {language} f{k} {what} gap {gap:.2f}"))
        rows.append(np.hstack(cells))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photo", type=Path, help="a portrait to prepare (default: the bundled demo portrait)")
    parser.add_argument("--out", type=Path, help="write full-size frames and contact-before-after.jpg here")
    args = parser.parse_args()
    from avatars.demo import write_demo_portrait
    from avatars.prepare import prepare
    from avatars.store import Avatar

    scratch = Path(tempfile.mkdtemp(prefix="photo-closure-"))
    photo = args.photo or write_demo_portrait(scratch / "astronaut.png")
    prepare(photo, scratch / "photo")
    avatar = Avatar(scratch / "photo")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    figures, rows = {}, []
    for language, text in (("zh", ZH), ("en", EN)):
        speech, phones = synthesised(text, language)
        runs = {mode: render(avatar, speech, phones, mode) for mode in ("closing", "no_closing", "no_phones")}
        figures[language] = {mode: {"closed_share": round(closed_share(meshes, phones)[0], 3),
                                    **_vowel_figures(avatar, frames, meshes, track)}
                             for mode, (frames, meshes, track) in runs.items()}
        figures[language]["onsets"] = closed_share(runs["closing"][1], phones)[1]
        if args.out:
            rows += _sheet_rows(avatar, language, runs, args.out)
    if args.out:
        cv2.imwrite(str(args.out / "contact-before-after.jpg"), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])
    emit("photo_closure", {"photo": photo.name, "rest_gap": round(gap_over_width(avatar.landmarks_at(0)), 3),
                           "shut_below": SHUT, **figures})


if __name__ == "__main__":
    main()
