"""The offline `faq` responder on a held-back list: 20 paraphrased customer questions about the sample
product sheet (core/conversations/material/sample_products.json) and 5 off-topic ones
(bench/faq_heldback.json, written before the matcher was tuned). Prints JSON: how many were answered
with the right item, how many off-topic ones were deflected, each question's match, and the time to
the reply's text (the responder alone, in-process).

    python -m bench.faq_match [--verbose]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from core.conversations.faq import index_for, sample_material

HELDBACK = Path(__file__).resolve().parent / "faq_heldback.json"


def right(label: str, expect: str) -> bool:
    # "product:x" is right for any answer about x; "product:x/price" needs the price.
    return label == expect or (not expect.endswith("/price") and label.split("/")[0] == expect)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="include every answer")
    args = parser.parse_args()
    held = json.loads(HELDBACK.read_text(encoding="utf-8"))
    material = sample_material()
    rows, times = [], []
    for item in held["questions"] + [{"q": q, "expect": "deflect"} for q in held["off_topic"]]:
        language = "en" if item["q"].isascii() else "zh"
        t0 = time.perf_counter()
        m = index_for(material, language).match(item["q"])
        times.append(time.perf_counter() - t0)
        row = {"q": item["q"], "expect": item["expect"], "got": m.label, "score": round(m.score, 3),
               "right": right(m.label, item["expect"])}
        if args.verbose:
            row["answer"] = m.answer
        rows.append(row)
    on_topic = [r for r in rows if r["expect"] != "deflect"]
    off = [r for r in rows if r["expect"] == "deflect"]
    print(json.dumps({
        "bench": "faq_match",
        "on_topic": len(on_topic), "right": sum(r["right"] for r in on_topic),
        "off_topic": len(off), "deflected": sum(r["right"] for r in off),
        "match_ms_p50": round(statistics.median(times) * 1000, 3), "match_ms_max": round(max(times) * 1000, 3),
        "wrong": [r for r in rows if not r["right"]],
        **({"rows": rows} if args.verbose else {}),
    }, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
