"""Untrusted text made safe to show a person: nothing in it can move the cursor or hide itself.

Tool arguments, tool descriptions, client names and file contents come from models, MCP
servers and clients, any of which may be hostile. Printed raw, an escape sequence can clear
the terminal and redraw a harmless-looking consent prompt over the real one; a bidi override
(U+202E) or a zero-width character makes a Qt label or a notification read differently from
what it holds. :func:`visible` replaces each such character with a visible stand-in:

- C0 controls and DEL become their Unicode control pictures (``\\x1b`` -> ``␛``, ``\\r`` -> ``␍``);
- C1 controls (``\\x9b`` is a CSI on many terminals), format characters (bidi controls,
  zero-width space/joiners, BOM, tag characters), line/paragraph separators, lone surrogates,
  variation selectors and invisible fillers become ``⟨U+XXXX⟩``.

Only the characters in ``keep`` pass through: ``"\\n\\t"`` where a block of text (a file, a
diff) must keep its lines, ``""`` for one-line fields (a name, a title).
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from functools import lru_cache
from typing import Any

MULTILINE = "\n\t"
ONE_LINE = ""

# Invisible or rendering-altering characters that are not in the Cc/Cf/Zl/Zp/Cs categories.
_EXTRA = (
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers (render as blanks)
    "\u17b4\u17b5"  # Khmer inherent vowels (invisible)
    "\u2800"  # braille blank
    "\ufe00-\ufe0f"  # variation selectors
    "\U000e0100-\U000e01ef"  # variation selectors supplement
)


@lru_cache(maxsize=1)
def _categories_class() -> str:
    """A regex character class of every Cc, Cf, Zl, Zp and Cs code point, as ranges."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@lru_cache(maxsize=8)
def _pattern(keep: str) -> re.Pattern[str]:
    body = f"[{_categories_class()}{_EXTRA}]"
    if keep:
        return re.compile(f"(?![{re.escape(keep)}]){body}")
    return re.compile(body)


def _stand_in(match: re.Match[str]) -> str:
    cp = ord(match.group())
    if cp < 0x20:
        return chr(0x2400 + cp)  # ␀ .. ␟
    if cp == 0x7F:
        return "\u2421"  # ␡
    return f"⟨U+{cp:04X}⟩"


def visible(text: str, keep: str = MULTILINE) -> str:
    """``text`` with every control, bidi, zero-width or invisible character shown as a stand-in."""
    return _pattern(keep).sub(_stand_in, text)


def one_line(text: str) -> str:
    """For a field shown on one line (a client name, a tool name): newlines are made visible too."""
    return visible(text, ONE_LINE)


def _json_escape(match: re.Match[str]) -> str:
    cp = ord(match.group())
    if cp > 0xFFFF:  # JSON escapes astral characters as a surrogate pair
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"
    return f"\\u{cp:04x}"


def json_visible(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the same characters escaped as
    ``\\uXXXX``: still the same JSON value, but nothing in it acts on the terminal."""
    return _pattern(ONE_LINE).sub(_json_escape, text)


class VisibleFormatter(logging.Formatter):
    """A log formatter for text that may carry untrusted names: each message is one visible line.

    A newline in a message (a client's name, a tool's) cannot forge a log line, and an escape
    sequence cannot act on the terminal that tails the log; tracebacks keep their lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return visible(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return visible(super().formatStack(stack_info))
