"""`exemplar` engine speed on one core at 720p: shape prediction, appearance choice, morph and
blend per frame, encode excluded.

    python -m bench.exemplar_fps [CLIP.mp4] [--frames 500] [--size 720x1280] [--avatar DIR]

The talking clip (default ../shared/media/real-talk-2.mp4) is padded and scaled into a frame of
`--size` (a portrait live-room frame) as the template, and enrolls the avatar with its own speech.
Reports frames/s with template frames already decoded (the engine's own cost) and including the
JPEG decode of each template frame, plus the one-off cost of predicting the shapes of 20 s of
speech. `fps_live*`: the route rooms take (avatars/yuv.py: the template's YUV planes, the mouth's
window through BGR), with every template frame decoded (`fps_live_decode`) or from the stream
workers' frame cache (`fps_live`): what serving a room costs before the encoder. Each also per CPU
second of the process (`per_cpu_second`), which a busy machine changes less than the wall figures.
`--avatar`: an avatar already built and enrolled this way (kept from an earlier run with
`--keep DIR`: it is then DIR/avatars/fps), so runs before and after a change can alternate
within minutes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

# One core, one BLAS thread, as the fleet runs it (core/fleet.py); set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2
import numpy as np

from lipsync.enroll import enroll
from lipsync.mouthbank import bank_dir, load_bank
from avatars.prepare import PrepareOptions, prepare
from avatars.store import Avatar
from bench.common import emit
from core.media import decode_audio, run_ffmpeg
from avatars import yuv
from lipsync.exemplar import ExemplarEngine, _State
from lipsync.mouth import analyse

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "real-talk-2.mp4"


def build(clip: Path, size: str, tmp: Path) -> Avatar:
    w, h = (int(v) for v in size.split("x"))
    template = tmp / "template.mp4"
    run_ffmpeg(["-v", "error", "-y", "-i", str(clip), "-vf",
                f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2",
                "-c:v", "libx264", "-crf", "16", "-c:a", "aac", str(template)])
    out = tmp / "avatars" / "fps"
    prepare(template, out, PrepareOptions(max_duration_s=600.0))
    enroll(template, bank_dir(out))
    return Avatar(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip", nargs="?", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--size", default="720x1280")
    parser.add_argument("--avatar", type=Path, help="a built, enrolled avatar directory (skips the build)")
    parser.add_argument("--keep", type=Path, help="build the avatar into this directory and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        avatar = Avatar(args.avatar) if args.avatar else build(args.clip, args.size, args.keep or Path(tmp_name))
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        cv2.setNumThreads(1)
        engine, bank = ExemplarEngine(), load_bank(avatar.path)
        speech = decode_audio(args.clip)
        speech = np.tile(speech, int(np.ceil(20 * 16000 / speech.size)))[:20 * 16000]
        t0 = time.perf_counter()
        shapes = bank.predict_shapes(speech, analyse(speech, 25, 500))
        predict_ms = 1000 * (time.perf_counter() - t0)
        decoded = [avatar.frame(i) for i in range(min(avatar.cycle_length, 50))]

        def run(with_decode: bool, live: yuv.TemplateYuv | None = None) -> tuple[float, float]:
            """(frames per wall second, frames per CPU second of this process)."""
            state = _State()
            start, cpu = time.perf_counter(), time.process_time()
            for k in range(args.frames):
                if live is not None:
                    engine.render_yuv(live.frame(avatar, k), avatar.landmarks_at(k), bank, shapes[k % len(shapes)],
                                      state)
                elif with_decode:
                    engine.render_shape(avatar, bank, k, shapes[k % len(shapes)], state)
                else:
                    # The decoded frame and its own landmarks (the run reads the first len(decoded) frames).
                    i = k % len(decoded)
                    engine.render_decoded(decoded[i].copy(), avatar.landmarks_at(i), bank, shapes[k % len(shapes)], state)
            return args.frames / (time.perf_counter() - start), args.frames / (time.process_time() - cpu)

        run(False)
        cache = yuv.FrameCache(1 << 40)
        run(False, yuv.TemplateYuv(cache))  # fills the cache with every frame the run reads
        figures = {"fps_render_blend": run(False), "fps_with_jpeg_decode": run(True),
                   "fps_live_decode": run(True, yuv.TemplateYuv(yuv.FrameCache(0))),
                   "fps_live": run(True, yuv.TemplateYuv(cache))}
        emit("exemplar_fps", {
            "clip": str(args.clip), "size": f"{avatar.width}x{avatar.height}", "frames": args.frames, "cores": 1,
            "exemplars": int(len(bank.patches)), "patch": list(bank.size),
            **{name: round(wall, 1) for name, (wall, _) in figures.items()},
            # Per CPU second: what the wall figures would be on a core of its own (the machine is shared).
            "per_cpu_second": {name: round(cpu, 1) for name, (_, cpu) in figures.items()},
            "predict_20s_speech_ms": round(predict_ms, 1), "target_fps": 50, "floor_fps": 25,
        })


if __name__ == "__main__":
    main()
