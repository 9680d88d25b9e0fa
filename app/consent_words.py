"""What a tool call would do, in plain words, for the consent dialog's headline.

"wants to change 1 line in src/billing/invoice.py" is read from the call itself: the
old/new text pairs ``glyph.render`` turns into diffs (``edit_file``'s ``edits``, and the
``old_string``/``new_string`` style of other servers), a ``content`` written to a path, or
the read-only hint. Anything else falls back to "wants to run edit_file (rune)". Every
piece comes from the model or a server: :func:`glyph.display.one_line` is applied here,
HTML escaping is the widget's business (the dialog shows these as plain text).
"""

from __future__ import annotations

import difflib

from glyph.consent import ConsentRequest
from glyph.display import one_line
from glyph.render import edit_pairs, path_argument, text_lines

MAX_PATH_CHARS = 80


def changed_lines(old: str, new: str) -> int:
    """Lines that differ: the larger of removed and added, so a one-line edit is 1, not 2.

    Lines as the diff shows them (``glyph.render.text_lines``: split at ``\\n`` only), so two
    texts that differ in any character differ in at least one line."""
    removed = added = 0
    for line in difflib.unified_diff(text_lines(old), text_lines(new), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        removed += line.startswith("-")
        added += line.startswith("+")
    return max(removed, added)


def _lines(n: int) -> str:
    return f"{n:,} line" + ("" if n == 1 else "s")


def target(request: ConsentRequest) -> str:
    """The file named in the call: the model's own relative path when Glyph resolved it to a
    path that ends with it, else the resolved path (never a shorter name than the truth)."""
    asked = path_argument(request.arguments)
    resolved = request.paths[0] if request.paths else None
    if asked and resolved and resolved.replace("\\", "/").endswith("/" + asked.lstrip("./")) and ".." not in asked:
        shown = asked
    else:
        shown = resolved or asked or ""
    shown = one_line(shown)
    if len(shown) > MAX_PATH_CHARS:
        shown = "…" + shown[-(MAX_PATH_CHARS - 1):]
    more = len(request.paths) - 1
    return shown + (f" and {more} more file{'s' if more != 1 else ''}" if more > 0 else "")


def action(request: ConsentRequest) -> str:
    """"wants to …" (without the client's name)."""
    where = target(request)
    pairs = list(edit_pairs(request.arguments))
    if pairs and where:
        n = sum(changed_lines(old, new) for old, new in pairs)
        return f"wants to change {_lines(n)} in {where}" if n else f"wants to edit {where} (no line changes)"
    content = request.arguments.get("content") if isinstance(request.arguments, dict) else None
    if isinstance(content, str) and where:
        return f"wants to write {_lines(len(text_lines(content)))} to {where}"
    tool = one_line(request.tool)
    if request.read_only and where:
        return f"wants to read {where} (with {tool})"
    if where:
        return f"wants to run {tool} on {where}"
    return f"wants to run {tool} ({one_line(request.server)})"


def headline(request: ConsentRequest) -> str:
    return f"{one_line(request.client) or 'A client'} {action(request)}"


def why(request: ConsentRequest) -> str:
    """The rule language, for the "Why am I asked?" disclosure."""
    hints = [h for h, on in (("read-only", request.read_only), ("destructive", request.destructive)) if on]
    lines = [f"Glyph asks because: {one_line(request.reason)}" + (f" · {', '.join(hints)}" if hints else ""),
             f"Tool: {one_line(request.tool)} on server {one_line(request.server)} "
             f"(called as {one_line(request.exposed)})"]
    about = request.description.strip().split("\n")[0][:200] if request.description.strip() else ""
    if about:
        lines.append(f"The server describes it as: {one_line(about)}")
    lines.append('To stop being asked, choose "Remember…", or add an allow rule to glyph.toml.')
    return "\n".join(lines)
