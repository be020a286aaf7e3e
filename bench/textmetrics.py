"""Error rates for scoring ASR output against a reference."""

import re
import unicodedata


def _levenshtein(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _strip(text: str) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "Z", "S")) and not ch.isspace())


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = list(_strip(reference)), list(_strip(hypothesis))
    return _levenshtein(ref, hyp) / max(1, len(ref))


def wer(reference: str, hypothesis: str) -> float:
    def words(t: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", t.lower())

    ref, hyp = words(reference), words(hypothesis)
    return _levenshtein(ref, hyp) / max(1, len(ref))


def best_cer(reference: str, hypothesis: str) -> float:
    """The CER of the reference against the best-matching stretch of a longer hypothesis (is the
    sentence somewhere in what was heard?)."""
    ref, hyp = _strip(reference), _strip(hypothesis)
    n = len(ref)
    spans = [hyp[i:i + m] for m in range(max(1, n - 2), n + 3) for i in range(0, max(1, len(hyp) - m + 1))]
    return min((cer(ref, span) for span in spans), default=1.0)
