"""How close is a re-dubbed mouth to the real one? Judged on real talking clips.

    python -m bench.redub CLIP.mp4 [CLIP.mp4 ...] [--engines exemplar,warp] [--foreign WAV] [--keep DIR]
                          [--split CLIP_STEM=ENROLL_S:END_S ...] [--save bench/figures/...json] [--oracle]

Per clip (25 fps, the person's own speech): the first 55% is the enrollment sample (or the first
ENROLL_S seconds with --split, e.g. long-cameron=64:91: a minute of enrollment, then the last shot up to
its end card); the rest, played backwards and silent, is the avatar template (its mouth moves, but not
with the speech); the rest's speech is rendered onto it. Render frame i is compared with real frame i after a
similarity alignment on eyes and nose (head pose drops out):

- lmd: mean distance of the 40 lip landmarks, in % of the inter-ocular distance (outer eye corners);
- opening_r: Pearson r of the rendered and real inner-lip opening series (13-14 / inter-ocular);
- mouth_ssim: SSIM (grey) of the aligned mouth crops (lip box plus a quarter of the mouth width);
- mouth_detail: the fine detail over each frame's own lips and chin (mean absolute difference from a
  1.5 px blur), the rendered frames' mean over the real frames': below 1 a softer mouth than the footage's.

The template itself (not lip-synced) is scored the same way as the baseline, and every engine gets two
controls: the same speech rotated by half its length (a mouth that moves like speech, out of sync) and
the engine's own still mouth (silence). LMD and SSIM show sync only where they beat the rotated control;
opening_r is the sync figure. With --oracle, the exemplar engine also draws the real footage's own lip
shapes (in time, and rotated): how much of the real mouth the render can show at best, apart from the
prediction. With --ceiling, it also draws what a predictor that knew only the real inner opening (and,
second, the opening and the mouth's width) could show at best: the real lips rebuilt linearly from those
series by a map fitted on the test part itself, each against the same rebuilt lips rotated. Its LMD
ratio is the most the LMD bar can expect from the mouth's opening and width alone; the rest of the real
lips' movement (the whole mouth moving against the eyes and nose, partly with the head's nodding;
expressions such as a smile) is not in the speech. Then a *different*
speech (the next clip's, or --foreign), cut in two with pauses of 0.7-0.8 s around and between the
halves, is rendered onto the talking clip itself (enrolled from its own speech) and measured with
bench.mouth_sync: sync lag within 2 frames and the share of closed frames in the pauses.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lipsync.canonical import CORNER_L, CORNER_R, LIP40, SHAPE, STABLE, apply, inner_opening, inter_ocular, similarity
from lipsync.enroll import enroll
from avatars.face import FaceMesher
from lipsync.mouthbank import bank_dir
from avatars.prepare import PrepareOptions, prepare
from avatars.store import Avatar
from bench.common import emit
from core.media import VideoWriter, decode_audio, iter_video_frames, video_size, write_wav
from lipsync.engines import load_engine

log = logging.getLogger(__name__)

SR = 16000
FPS = 25
ENROLL_SHARE = 0.55


def read_clip(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    w, h = video_size(path)
    return list(iter_video_frames(path, w, h, FPS)), decode_audio(path, SR)


def write_video(path: Path, frames: list[np.ndarray], audio: np.ndarray | None, tmp: Path) -> Path:
    wav = None
    if audio is not None:
        wav = tmp / f"{path.stem}.wav"
        write_wav(wav, audio, SR)
    h, w = frames[0].shape[:2]
    writer = VideoWriter(path, w, h, FPS, audio=wav, crf=14)
    for frame in frames:
        writer.write(frame)
    return writer.close()


def mesh_all(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    mesher = FaceMesher(video=False)
    try:
        return [mesher.landmarks(f) for f in frames]
    finally:
        mesher.close()


def _mouth_ssim(out: np.ndarray, real: np.ndarray, m: np.ndarray, real_lm: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    h, w = real.shape[:2]
    aligned = cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lips = real_lm[LIP40]
    margin = 0.25 * float(lips[:, 0].max() - lips[:, 0].min())
    x1, y1 = np.maximum(0, np.floor(lips.min(axis=0) - margin)).astype(int)
    x2, y2 = np.minimum([w, h], np.ceil(lips.max(axis=0) + margin)).astype(int)
    a = cv2.cvtColor(aligned[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    b = cv2.cvtColor(real[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return float(structural_similarity(a, b, data_range=255))


def mouth_detail(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """Fine detail over the lips and chin of a frame with `landmarks`: the mean absolute difference from
    a 1.5 px blur, in grey levels."""
    (x1, y1), (x2, y2) = landmarks[SHAPE].min(axis=0).astype(int), landmarks[SHAPE].max(axis=0).astype(int)
    grey = cv2.cvtColor(frame[max(0, y1):y2, max(0, x1):x2], cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.5)).mean())


def compare(rendered: list[np.ndarray], real: list[np.ndarray], real_lm: list | None = None) -> dict:
    """LMD, opening correlation and mouth SSIM of `rendered` against `real`, frame by frame."""
    real_lm = real_lm if real_lm is not None else mesh_all(real)
    out_lm = mesh_all(rendered)
    lmd, ssim, open_out, open_real, detail = [], [], [], [], []
    for out, ref, lo, lr in zip(rendered, real, out_lm, real_lm):
        if lo is None or lr is None:
            continue
        detail.append((mouth_detail(out, lo), mouth_detail(ref, lr)))
        m = similarity(lo[STABLE], lr[STABLE])
        aligned = apply(m, lo)
        iod = inter_ocular(lr)
        lmd.append(100.0 * float(np.linalg.norm(aligned[LIP40] - lr[LIP40], axis=1).mean()) / iod)
        open_out.append(float(np.linalg.norm(lo[14] - lo[13])) / inter_ocular(lo))
        open_real.append(float(np.linalg.norm(lr[14] - lr[13])) / iod)
        ssim.append(_mouth_ssim(out, ref, m, lr))
    a, b = np.array(open_out), np.array(open_real)
    r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else 0.0
    return {"frames": len(lmd), "lmd": round(float(np.mean(lmd)), 3), "opening_r": round(r, 3),
            "mouth_ssim": round(float(np.mean(ssim)), 4),
            "mouth_detail": round(float(np.mean([d[0] for d in detail]) / max(1e-6, np.mean([d[1] for d in detail]))), 3)
            if detail else None,
            "opening_range": [round(float(np.percentile(a, 5)), 4), round(float(np.percentile(a, 95)), 4)]}


def build_avatar(template: Path, sample: Path | None, root: Path, name: str) -> Avatar:
    out = root / "avatars" / name
    prepare(template, out, PrepareOptions(max_duration_s=600.0))
    if sample is not None:
        enroll(sample, bank_dir(out))
    return Avatar(out)


def render(engine_name: str, avatar: Avatar, speech: np.ndarray, n: int,
           shapes: np.ndarray | None = None) -> list[np.ndarray]:
    """`shapes`: mouths to draw instead of the speech's (the exemplar engine only; the oracle)."""
    engine = load_engine(engine_name, Path("models"))
    return list(engine.frames(avatar, speech, 0, n) if shapes is None else
                engine.frames(avatar, speech, 0, n, shapes=shapes))


def redub_clip(clip: Path, engines: list[str], tmp: Path, split: tuple[float, float] | None = None,
               controls: bool = True, oracle: bool = False, keep_videos: bool = False,
               ceiling: bool = False) -> dict:
    """`controls=False` skips the rotated and still controls and the verdict (two of every engine's three
    renders): for a caller that judges against the template and the other engines only (tests/test_enroll.py).
    `oracle` also renders the real footage's own lip shapes with the exemplar engine, in time and
    rotated: the render's ceiling, whatever the prediction. `ceiling` also renders the real lips rebuilt
    from their inner opening (and width) alone (ceilings). `keep_videos` also writes each engine's
    render and the real part (redub-ENGINE.mp4, real.mp4) into `tmp` to look at (--keep): nothing here
    reads them, and encoding them cost about a fifth of a short clip's run."""
    frames, audio = read_clip(clip)
    cut = int(round(split[0] * FPS)) if split else int(round(ENROLL_SHARE * len(frames)))
    end = min(len(frames), int(round(split[1] * FPS))) if split else len(frames)
    real = frames[cut:end]
    n = len(real)
    speech = audio[int(cut * SR / FPS):int(cut * SR / FPS) + int(n * SR / FPS)]
    sample = write_video(tmp / "sample.mp4", frames[:cut], audio[:int(cut * SR / FPS)], tmp)
    template = write_video(tmp / "template.mp4", real[::-1], None, tmp)
    avatar = build_avatar(template, sample, tmp, "redub")
    real_lm = mesh_all(real)
    result = {"clip": str(clip), "frames": len(frames), "enroll_frames": cut, "test_frames": n,
              "template": compare([avatar.frame(i) for i in range(n)], real, real_lm)}
    control_speech = {"rotated": np.roll(speech, len(speech) // 2), "still": np.zeros_like(speech)} if controls else {}
    for name in engines:
        rendered = render(name, avatar, speech, n)
        if keep_videos:
            write_video(tmp / f"redub-{name}.mp4", rendered, speech, tmp)
        result[name] = compare(rendered, real, real_lm)
        for control, other in control_speech.items():
            result[f"{name}:{control}"] = compare(render(name, avatar, other, n), real, real_lm)
        if controls:
            result[f"{name}:verdict"] = verdict(result, name)
    if oracle and "exemplar" in engines:
        shapes = real_shapes(real_lm, avatar)
        for control, moved in {"oracle": shapes, "oracle:rotated": np.roll(shapes, n // 2, axis=0)}.items():
            result[f"exemplar:{control}"] = compare(render("exemplar", avatar, speech, n, moved), real, real_lm)
        result["exemplar:oracle"]["lmd_vs_rotated"] = lmd_ratio(result["exemplar:oracle"],
                                                                result["exemplar:oracle:rotated"])
    if ceiling and "exemplar" in engines:
        result.update(ceilings(avatar, speech, real, real_lm))
    if keep_videos:
        write_video(tmp / "real.mp4", real, speech, tmp)
    return result


def real_shapes(real_lm: list, avatar: Avatar) -> np.ndarray:
    """The real footage's lips and chin in the enrolled bank's canonical frame; a frame without a
    face keeps the previous one's."""
    from lipsync.mouthbank import load_bank

    ref = load_bank(avatar.path).ref
    shapes, last = [], None
    for lm in real_lm:
        last = apply(similarity(lm[STABLE], ref), lm[SHAPE]) if lm is not None else last
        shapes.append(last)
    first = next(s for s in shapes if s is not None)
    return np.array([first if s is None else s for s in shapes], np.float32)


def rebuilt_from(shapes: np.ndarray, series: np.ndarray) -> np.ndarray:
    """`shapes` [n, points, 2] rebuilt linearly from `series` [n, k] (least squares on these very
    frames, an intercept included): the part of the lips' movement those series carry."""
    x = np.column_stack([series, np.ones(len(series))])
    flat = shapes.reshape(len(shapes), -1)
    return (x @ np.linalg.lstsq(x, flat, rcond=None)[0]).reshape(shapes.shape).astype(np.float32)


def ceilings(avatar: Avatar, speech: np.ndarray, real: list[np.ndarray], real_lm: list) -> dict:
    """The exemplar engine drawing the real lips rebuilt from the real inner opening alone, then from
    the opening and the mouth's width (corner to corner), each in time and rotated by half its length."""
    shapes = real_shapes(real_lm, avatar)
    n = len(shapes)
    opening = inner_opening(shapes)
    width = np.linalg.norm(shapes[:, CORNER_L] - shapes[:, CORNER_R], axis=1)
    out = {}
    for name, series in {"opening": opening[:, None], "opening_width": np.column_stack([opening, width])}.items():
        rebuilt = rebuilt_from(shapes, series)
        got = compare(render("exemplar", avatar, speech, n, rebuilt), real, real_lm)
        rotated = compare(render("exemplar", avatar, speech, n, np.roll(rebuilt, n // 2, axis=0)), real, real_lm)
        out[f"exemplar:ceiling_{name}"] = got | {"lmd_vs_rotated": lmd_ratio(got, rotated)}
        out[f"exemplar:ceiling_{name}:rotated"] = rotated
    return out


def lmd_ratio(got: dict, rotated: dict) -> float:
    return round(got["lmd"] / max(1e-9, rotated["lmd"]), 3)


def verdict(result: dict, engine: str) -> dict:
    """The issue's bar for one clip: opening r >= 0.5, LMD at most 0.85x the rotated control's, mouth
    SSIM above the template's."""
    got, rotated, template = result[engine], result[f"{engine}:rotated"], result["template"]
    return {"opening_r_ge_0.5": got["opening_r"] >= 0.5,
            "lmd_vs_rotated": lmd_ratio(got, rotated),
            "lmd_le_0.85x_rotated": got["lmd"] <= 0.85 * rotated["lmd"],
            "ssim_above_template": got["mouth_ssim"] > template["mouth_ssim"]}


def with_pauses(speech: np.ndarray) -> np.ndarray:
    half = len(speech) // 2
    gap = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    return np.concatenate([gap(0.7), speech[:half], gap(0.8), speech[half:], gap(0.7)]).astype(np.float32)


def foreign_check(clip: Path, foreign: np.ndarray, tmp: Path, engine_name: str = "exemplar") -> dict:
    """A different speech on the talking clip itself (enrolled from its own speech)."""
    from bench.mouth_sync import analyze

    avatar = build_avatar(clip, clip, tmp, "talking")
    speech = with_pauses(foreign)
    n = int(round(len(speech) / SR * FPS))
    out = write_video(tmp / "foreign.mp4", render(engine_name, avatar, speech, n), speech, tmp)
    figures = analyze(out, speech)
    keep = ("r", "lag_frames", "r_syllable", "closed_share_in_silence", "silent_frames", "motion_range", "verdict")
    return {k: figures.get(k) for k in keep} | {
        "sync_within_2_frames": abs(int(figures.get("lag_frames", 99))) <= 2 and figures.get("r", 0) > 0.3}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--engines", default="exemplar,warp")
    parser.add_argument("--foreign", type=Path, help="speech for the foreign-speech check (default: the next clip's)")
    parser.add_argument("--keep", type=Path, help="keep the work files (renders, avatars) here")
    parser.add_argument("--split", action="append", default=[], metavar="STEM=ENROLL_S:END_S",
                        help="enroll on a clip's first ENROLL_S seconds, test up to END_S")
    parser.add_argument("--no-foreign", action="store_true", help="skip the foreign-speech check")
    parser.add_argument("--save", type=Path, help="also write the JSON here (with the settings used)")
    parser.add_argument("--oracle", action="store_true",
                        help="also render the real footage's own lip shapes (the render's ceiling)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also render the real lips rebuilt from their opening (and width) alone")
    args = parser.parse_args(argv)
    splits = {k: tuple(float(v) for v in spec.split(":")) for k, spec in (a.split("=", 1) for a in args.split)}
    logging.basicConfig(level=logging.WARNING)
    engines = [e for e in args.engines.split(",") if e]
    results = []
    for k, clip in enumerate(args.clips):
        with tempfile.TemporaryDirectory(prefix="redub-") as tmp_name:
            tmp = args.keep / clip.stem if args.keep else Path(tmp_name)
            tmp.mkdir(parents=True, exist_ok=True)
            result = redub_clip(clip, engines, tmp, splits.get(clip.stem), oracle=args.oracle,
                                keep_videos=args.keep is not None, ceiling=args.ceiling)
            other = args.foreign or args.clips[(k + 1) % len(args.clips)]
            if other != clip and not args.no_foreign and clip.stem not in splits:
                # (A split clip has cuts or an end card: the whole of it is no avatar template.)
                result["foreign"] = {"speech": str(other), **foreign_check(clip, decode_audio(other, SR), tmp)}
            results.append(result)
    means = {}
    for name in ["template", *[f"{e}{c}" for e in engines for c in ("", ":rotated", ":still")]]:
        means[name] = {key: round(float(np.mean([r[name][key] for r in results])), 4)
                       for key in ("lmd", "opening_r", "mouth_ssim")}
    figures = {"clips": results, "means": means, "settings": settings_used(engines)}
    emit("redub", figures)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(figures, indent=1, ensure_ascii=False))


def settings_used(engines: list[str]) -> dict:
    """What the run's renders depended on, so a saved figure says which settings it measured."""
    from dataclasses import asdict

    from lipsync.enroll import EnrollOptions
    from lipsync.mouthbank import BANK_VERSION, SPEECH_PRIOR_FULL_FRAMES, SPEECH_PRIOR_WEIGHT
    from lipsync.exemplar import ExemplarOptions
    from lipsync.prior import PRIOR_SHA256

    return {"engines": engines, "bank_version": BANK_VERSION, "enroll": asdict(EnrollOptions()),
            "exemplar": asdict(ExemplarOptions()), "enroll_share": ENROLL_SHARE,
            "speech_prior": {"sha256": PRIOR_SHA256, "weight": SPEECH_PRIOR_WEIGHT,
                             "full_weight_frames": SPEECH_PRIOR_FULL_FRAMES}}


if __name__ == "__main__":
    main()
