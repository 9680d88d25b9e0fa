"""What a tool call would do, in plain words, for the consent dialog's headline.

"wants to change 1 line in src/billing/invoice.py" is read from the call itself: the
old/new text pairs ``glyph.render`` turns into diffs (``edit_file``'s ``edits``, and the
``old_string``/``new_string`` style of other servers; ``replace_all`` reads "replace every
match of …", never a count of lines), a ``content`` written to a path (a whole-file write
says whether it creates the file or replaces its contents), or the read-only hint. Anything else falls back to "wants to run edit_file (rune)". Every
piece comes from the model or a server: :func:`glyph.display.one_line` is applied here,
HTML escaping is the widget's business (the dialog shows these as plain text).
"""

from __future__ import annotations

import difflib
import os

from glyph.consent import ConsentRequest, Scope
from glyph.display import one_line
from glyph.render import EditPair, edit_pairs, path_argument, text_lines

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


SNIPPET_CHARS = 40
WHOLE_FILE_TOOLS = frozenset({"writefile", "write"})  # rune's and Claude Code's: create or replace it all


def _snippet(text: str) -> str:
    """The first non-blank line of a text to find, short and visible: “check_auth()”, “x = 1 …”."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    first = one_line(lines[0] if lines else text)
    if len(first) > SNIPPET_CHARS:
        first = first[:SNIPPET_CHARS - 1] + "…"
    elif len(lines) > 1:
        first += " …"
    return f"“{first}”"


def _edits(pairs: list[EditPair], where: str) -> str:
    """"change 3 lines", "replace every match of “x”", or both: a ``replace_all`` pair changes
    every place its text occurs (how many is known only to the file), so it is never counted
    as the lines of one."""
    n = sum(changed_lines(p.old, p.new) for p in pairs if not p.every)
    every = [p for p in pairs if p.every]
    parts = [f"change {_lines(n)}"] if n else []
    if every:
        more = len(every) - 1
        parts.append(f"replace every match of {_snippet(every[0].old)}"
                     + (f" and {more} more text{'s' if more != 1 else ''}" if more else ""))
    if not parts:  # only when every old text equals its new one (texts split at \n only)
        return f"wants to edit {where} (no line changes)"
    return f"wants to {' and '.join(parts)} in {where}"


def _write(request: ConsentRequest, content: str, where: str) -> str:
    """A whole-file write (rune's ``write_file``: create, or replace all the contents) says which,
    as the file is now; other tools that take a ``content`` just "write" it."""
    n = len(text_lines(content))
    if _norm(request.tool) not in WHOLE_FILE_TOOLS:
        return f"wants to write {_lines(n)} to {where}"
    exists = bool(request.paths) and os.path.lexists(request.paths[0])
    if not exists:
        return f"wants to create {where} with {_lines(n)}" if n else f"wants to create {where}, empty"
    return f"wants to replace the contents of {where} with {_lines(n)}" if n else f"wants to empty {where}"


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def action(request: ConsentRequest) -> str:
    """"wants to …" (without the client's name)."""
    where = target(request)
    pairs = list(edit_pairs(request.arguments))
    if pairs and where:
        return _edits(pairs, where)
    content = request.arguments.get("content") if isinstance(request.arguments, dict) else None
    if isinstance(content, str) and where:
        return _write(request, content, where)
    tool = one_line(request.tool)
    if request.read_only and where:
        return f"wants to read {where} (with {tool})"
    if where:
        return f"wants to run {tool} on {where}"
    return f"wants to run {tool} ({one_line(request.server)})"


def headline(request: ConsentRequest) -> str:
    return f"{one_line(request.client) or 'A client'} {action(request)}"


def _covers(request: ConsentRequest) -> str:
    return "on any file" if request.paths or path_argument(request.arguments) else "with any arguments"


def remember_label(request: ConsentRequest, scope: Scope) -> str:
    """The Remember… menu's words. Glyph remembers an answer per server and tool
    (``glyph.decisions``), never per file, arguments or client: the label says so."""
    tool = one_line(request.tool)
    if scope is Scope.SESSION:
        return f"Allow {tool} {_covers(request)} until OMEN quits"
    if scope is Scope.ALWAYS:
        return f"Always allow {tool} {_covers(request)}"
    if scope is Scope.DENY_ALWAYS:
        return f"Never allow {tool} (always deny)"
    return scope.label


def remember_tip(request: ConsentRequest, scope: Scope) -> str:
    """What a remembered answer does, exactly (``glyph.decisions`` and ``glyph.gateway._settled``)."""
    what = f"every call of {one_line(request.tool)} from the {one_line(request.server)} server"
    forget = f"`glyph decisions --forget {one_line(request.exposed)}`"
    if scope is Scope.SESSION:
        return (f"Glyph stops asking about {what}: any file, any arguments, from any client, "
                "until OMEN quits or Glyph restarts. Deny rules in glyph.toml still apply.")
    if scope is Scope.ALWAYS:
        return (f"Glyph stops asking about {what}: any file, any arguments, from any client, in this app "
                "and in every `glyph serve` that shares its data folder, until the tool's definition "
                f"changes or you run {forget}. Deny rules in glyph.toml still apply.")
    if scope is Scope.DENY_ALWAYS:
        return (f"Glyph refuses {what} without asking, from any client, even where a rule allows it, "
                f"until you run {forget}.")
    return ""


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
