"""The curated question bank shipped with the project (``core/interviews/bank/*.json``).

One file per job family, each with Mandarin and English questions and the keywords that match a
job title to it; ``general.json`` holds the opening and behavioural questions every interview can
use. Selection is deterministic: the same job text, language and count give the same questions,
and a shorter interview is a prefix of a longer one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

BANK_DIR = Path(__file__).resolve().parent / "bank"
LANGUAGES = ("zh", "en")
GENERAL = "general"


@dataclass(frozen=True)
class Family:
    name: str
    title: dict[str, str]
    keywords: tuple[str, ...]  # lower-case; CJK ones match as substrings, Latin ones as whole words
    questions: dict[str, tuple[str, ...]]
    opening: dict[str, str]


class BankError(ValueError):
    pass


def _load(path: Path) -> Family:
    raw = json.loads(path.read_text(encoding="utf-8"))
    questions = {lang: tuple(q.strip() for q in raw["questions"][lang] if q.strip()) for lang in LANGUAGES}
    keywords = tuple(k.strip().lower() for lang in LANGUAGES for k in raw["keywords"].get(lang, []) if k.strip())
    return Family(name=raw["family"], title=raw.get("title", {}), keywords=keywords, questions=questions,
                  opening=raw.get("opening", {}))


@lru_cache(maxsize=1)
def families() -> dict[str, Family]:
    """Every family of the bank, by name (read once per process)."""
    loaded = {f.name: f for f in (_load(p) for p in sorted(BANK_DIR.glob("*.json")))}
    if GENERAL not in loaded:
        raise BankError(f"the question bank has no {GENERAL}.json")
    return loaded


def normalize_job(job: str) -> str:
    # NFKC folds full-width letters and spaces (common in Chinese input) into their plain forms.
    return " ".join(unicodedata.normalize("NFKC", job).lower().split())


def _hits(keyword: str, job: str) -> bool:
    if keyword.isascii():
        return re.search(rf"(?<![a-z0-9]){re.escape(keyword)}(?![a-z0-9])", job) is not None
    return keyword in job


def match_family(job: str) -> str:
    """The family whose keywords cover most of the job text (longer keywords weigh more, so
    "数据开发" and "product designer" go to the more specific family); ties go alphabetically."""
    text = normalize_job(job)
    scores = {name: sum(len(k) for k in fam.keywords if _hits(k, text))
              for name, fam in families().items() if name != GENERAL}
    best = max(scores.values(), default=0)
    if best == 0:
        return GENERAL
    return min(name for name, score in scores.items() if score == best)


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def ordered_questions(job: str, language: str) -> tuple[str, list[str]]:
    """(family, every question in asking order): the opening question, then the family's
    questions, then the general ones, each group in an order seeded by the job text; no repeats."""
    if language not in LANGUAGES:
        raise BankError(f"the bank has questions in {', '.join(LANGUAGES)}, not {language!r}")
    fams = families()
    family = match_family(job)
    rng = random.Random(_seed(family, language, normalize_job(job)))
    specific = list(fams[family].questions[language]) if family != GENERAL else []
    general = list(fams[GENERAL].questions[language])
    rng.shuffle(specific)
    rng.shuffle(general)
    ordered: list[str] = []
    for question in [fams[GENERAL].opening.get(language, ""), *specific, *general]:
        if question and question not in ordered:
            ordered.append(question)
    return family, ordered


def bank_questions(job: str, count: int, language: str) -> tuple[str, list[str]]:
    """(family, the first `count` questions of `ordered_questions`)."""
    family, ordered = ordered_questions(job, language)
    if count > len(ordered):
        raise BankError(f"the bank has only {len(ordered)} {language} questions for {family}")
    return family, ordered[:count]
