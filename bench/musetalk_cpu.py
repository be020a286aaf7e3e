"""MuseTalk on this CPU with full-size random weights: milliseconds per frame for the audio features
(whisper-tiny), the UNet pass and the VAE decode at several batch sizes, plus the one-off crop encode.

    python -m bench.musetalk_cpu [--batches 1,4,8] [--dtype fp32[,bf16]] [--audio-s 2]

Full size is slow on a CPU (seconds per frame), so every figure is one warm-up and one timed run.
Random weights cost exactly what the official ones cost: same shapes, same kernels.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import time

import numpy as np

from bench.common import emit

log = logging.getLogger("bench.musetalk_cpu")


def _timed(fn, *args):
    fn(*args)  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure(dtype: str, batches: list[int], audio_s: float) -> dict:
    import torch

    from models.musetalk_net.synthetic import random_engine

    started = time.perf_counter()
    engine = random_engine(tiny=False, dtype=dtype, batch_size=max(batches))
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(audio_s * 16000))).astype(np.float32)
    audio_time, feats = _timed(engine.audio_features, audio)
    crops = rng.integers(0, 256, (max(batches), engine.crop_size, engine.crop_size, 3), dtype=np.uint8)
    encode_time, latents = _timed(engine.encode_crops, crops)
    figures = {
        "dtype": str(engine.dtype).removeprefix("torch."),
        "build_random_engine_s": round(build_s, 1),
        "audio_features_ms_per_frame": round(1000 * audio_time / len(feats), 2),
        "audio_features_clip": {"audio_s": audio_s, "frames": len(feats), "total_ms": round(1000 * audio_time, 1)},
        "encode_crops_ms_per_frame": round(1000 * encode_time / len(crops), 1),
        "render": {},
    }
    for batch in batches:
        lat = latents[:batch]
        audio_batch = np.resize(feats, (batch, *feats.shape[1:]))
        unet_time, pred = _timed(engine.predict_latents, lat, audio_batch)
        decode_time, frames = _timed(engine.decode_latents, pred)
        assert frames.shape == (batch, engine.crop_size, engine.crop_size, 3)
        figures["render"][f"batch_{batch}"] = {
            "unet_ms_per_frame": round(1000 * unet_time / batch, 1),
            "vae_decode_ms_per_frame": round(1000 * decode_time / batch, 1),
            "render_ms_per_frame": round(1000 * (unet_time + decode_time) / batch, 1),
        }
        log.info("%s batch %d: %s", dtype, batch, figures["render"][f"batch_{batch}"])
    best = min(v["render_ms_per_frame"] for v in figures["render"].values())
    figures["end_to_end_ms_per_frame_best"] = round(best + figures["audio_features_ms_per_frame"], 1)
    figures["torch_threads"] = torch.get_num_threads()
    del engine
    gc.collect()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default="fp32", help="comma-separated: fp32, bf16")
    parser.add_argument("--audio-s", type=float, default=2.0, help="clip length for the audio-feature timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    batches = [int(b) for b in args.batches.split(",") if b]
    # Other processes on a 2-core machine distort every figure; the load average says how much.
    load_before = os.getloadavg()[0]
    results = {dtype: measure(dtype, batches, args.audio_s) for dtype in args.dtype.split(",") if dtype}
    emit("musetalk_cpu", {"model": "MuseTalk v1.5 full size (random weights)", "crop": 256, "latent": 32,
                          "cpu_affinity": len(os.sched_getaffinity(0)),
                          "loadavg_1m": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
                          "results": results})


if __name__ == "__main__":
    main()
