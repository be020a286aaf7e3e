"""Cutting streamed reply text into sentences the moment each one is complete."""

from __future__ import annotations

import re

_ENDS = "。！？!?；;…\n"
_CLOSERS = "”’\"')）】」』"
_SPEAKABLE = re.compile(r"\w")
_WORD = re.compile(r"\w")  # letters, digits and CJK characters: what a first clause is counted in


class SentenceCutter:
    """push() text deltas, get back the sentences they completed; flush() the rest at the end.

    A Latin full stop ends a sentence only once whitespace follows it ("3.5", "v1.2" stay whole);
    a sentence longer than `max_chars` is cut at its last comma so no sentence waits unboundedly.
    `first_clause_chars` (0: off): the first piece is cut at its first comma once at least that many
    letters or characters stand before it ("好的，" "Sure, "), so a reply's first speech is synthesised
    from a clause, not a whole sentence (0.1-0.3 s sooner for a short one; the comma's pause is where
    the two utterances meet).
    """

    def __init__(self, max_chars: int = 80, first_clause_chars: int = 0) -> None:
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self.cut_any = False  # a piece was cut already: the first-clause rule is spent
        self.buf = ""

    def push(self, delta: str) -> list[str]:
        self.buf += delta
        out: list[str] = []
        while (cut := self._cut_point()) is not None:
            piece, self.buf = self.buf[:cut], self.buf[cut:]
            self._add(out, piece)
            self.cut_any = True
        return out

    def flush(self) -> list[str]:
        out: list[str] = []
        self._add(out, self.buf)
        self.buf = ""
        return out

    @staticmethod
    def _add(out: list[str], piece: str) -> None:
        # A closing quote that arrived after its sentence was cut is dropped, not spoken next.
        piece = piece.strip().lstrip(_CLOSERS).strip()
        if not piece:
            return
        if _SPEAKABLE.search(piece):
            out.append(piece)
        elif out:  # stray punctuation ("……", a closing quote) belongs to the sentence before
            out[-1] += piece

    def _cut_point(self) -> int | None:
        buf = self.buf
        first = self.first_clause_chars > 0 and not self.cut_any
        for i, ch in enumerate(buf):
            # A Latin comma counts once whitespace follows it ("3,000" stays whole).
            if first and (ch in "，、" or (ch == "," and i + 1 < len(buf) and buf[i + 1].isspace())) \
                    and len(_WORD.findall(buf[:i])) >= self.first_clause_chars:
                return i + 1
            if ch in _ENDS:
                j = i + 1
                while j < len(buf) and (buf[j] in _CLOSERS or buf[j] in _ENDS):
                    j += 1
                return j
            if ch == "." and i + 1 < len(buf) and buf[i + 1].isspace():
                return i + 1
        if len(buf) > self.max_chars:
            cut = max(buf.rfind(c, 0, self.max_chars) for c in "，,、：:")
            return cut + 1 if cut > 0 else self.max_chars
        return None
