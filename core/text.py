"""Text hygiene for everything a client types: control characters and lone surrogates are refused
where they enter, so no worker, subprocess, log line or Redis record ever meets them.

Allowed: tab, line feed and carriage return (CRLF line ends from Windows clients and browser
forms); refused: every other C0 control (U+0000..U+001F, NUL included) and lone UTF-16 surrogates
(U+D800..U+DFFF, reachable through JSON ``\\ud800`` escapes), which no encoder downstream accepts.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import Invalid

_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
MAX_DEPTH = 64  # JSON nesting walked; deeper documents are refused by the body limit long before


def bad_char(text: str) -> str | None:
    """The first refused character of `text`, or None."""
    match = _BAD.search(text)
    return match.group(0) if match else None


def refusal(where: str, char: str) -> Invalid:
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return Invalid("invalid_text", f"{where}: {what} (U+{ord(char):04X}) is not allowed in text",
                   field=where, char=f"U+{ord(char):04X}")


def check_text(text: str | None, where: str) -> str | None:
    """`text` itself, or Invalid (invalid_text) naming the field and the character."""
    if text is not None:
        char = bad_char(text)
        if char is not None:
            raise refusal(where, char)
    return text


def check_tree(value: Any, where: str = "body", depth: int = 0) -> None:
    """Every string (keys included) of a parsed JSON document."""
    if isinstance(value, str):
        check_text(value, where)
    elif depth < MAX_DEPTH and isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_tree(item, f"{where}.{key}" if where != "body" else str(key), depth + 1)
    elif depth < MAX_DEPTH and isinstance(value, list):
        for index, item in enumerate(value):
            check_tree(item, f"{where}[{index}]", depth + 1)
