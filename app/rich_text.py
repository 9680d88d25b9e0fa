"""Untrusted text in a Qt tooltip, shown as the text it is.

Qt renders a tooltip as HTML whenever it "might be rich text" (``Qt::mightBeRichText``: a
tag near the start). An upstream's error body or a tool's arguments can be made to look
like that: ``<img src=…>``, a link, text hidden with ``<span style='font-size:0'>``. So the
tooltip is always rich text we write: the neutralised text (control characters made
visible, ``omen_local.visible``), HTML-escaped, in a paragraph that keeps its line breaks.
"""

from __future__ import annotations

import html

from omen_local.visible import visible

MAX_CHARS = 4000  # a tooltip taller than the screen helps nobody; the log has the rest


def plain_tip(text: str) -> str:
    """``text`` (untrusted, multi-line) as a tooltip Qt cannot read as markup; "" stays ""."""
    if not text:
        return ""
    cut = text[:MAX_CHARS] + ("…" if len(text) > MAX_CHARS else "")
    return f"<p style='white-space:pre-wrap'>{html.escape(visible(cut, chr(10) + chr(9)))}</p>"
