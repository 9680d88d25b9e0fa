"""Text from outside (upstream errors, request paths, client names) made safe to print.

An upstream's error message or a request path can carry escape sequences that act on the
terminal tailing ``omen serve``'s log, or a newline that forges a log line. Every control,
format (bidi, zero-width), separator and invisible character becomes a visible stand-in:
C0 controls and DEL their control pictures (``\\x1b`` -> ``␛``, ``\\n`` -> ``␊``), the rest
``⟨U+XXXX⟩``. The same rules as ``glyph.display`` (which omen_local must not import).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_EXTRA = frozenset("\u034f\u115f\u1160\u3164\uffa0\u17b4\u17b5\u2800") | frozenset(
    chr(c) for c in (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)))


def _stand_in(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x20:
        return chr(0x2400 + cp)
    if cp == 0x7F:
        return "\u2421"
    return f"⟨U+{cp:04X}⟩"


def visible(text: str, keep: str = "") -> str:
    """``text`` with every hidden or cursor-moving character (but those in ``keep``) made visible."""
    if text.isascii() and text.isprintable():
        return text  # the usual case, at C speed
    return "".join(
        _stand_in(ch) if ch not in keep and (unicodedata.category(ch) in _HIDDEN_CATEGORIES or ch in _EXTRA) else ch
        for ch in text)


class VisibleFormatter(logging.Formatter):
    """Each log message on one visible line; tracebacks keep their lines, nothing else."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # the stdlib's name
        return visible(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return visible(super().formatException(ei), "\n\t")

    def formatStack(self, stack_info: str) -> str:
        return visible(super().formatStack(stack_info), "\n\t")
