"""A consent request as readable text, for the terminal prompt and the Qt dialog alike.

Readable means: multi-line strings (file contents, patches) are shown as blocks, not as
JSON with ``\\n`` escapes; old/new text pairs (``old_string``/``new_string``,
``oldText``/``newText``, ...) are shown as a unified diff; a changed tool definition is
shown as a diff of the definition the user approved against the new one. Everything that
comes from the model, the client or a server passes through ``glyph.display`` first, so no
escape sequence, bidi override or zero-width character reaches the person deciding.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from glyph.consent import ConsentRequest
from glyph.display import one_line, visible

_OLD_NEW = {
    "oldstring": "newstring", "oldstr": "newstr", "oldtext": "newtext", "old": "new",
    "oldcontent": "newcontent", "search": "replace", "before": "after",
}


def _norm(key: str) -> str:
    return re.sub(r"[_\-\s]", "", key).lower()


def render_header(request: ConsentRequest) -> str:
    hints = [h for h, on in (("read-only", request.read_only), ("destructive", request.destructive)) if on]
    lines = [
        f"Client   : {one_line(request.client)}",
        f"Server   : {one_line(request.server)}",
        f"Tool     : {one_line(request.tool)}  ({one_line(request.exposed)})"
        + (f"  [{', '.join(hints)}]" if hints else ""),
        f"Why asked: {one_line(request.reason)}",
    ]
    about = re.split(r"\r?\n", request.description.strip())[0][:200] if request.description else ""
    if about:
        lines.append("About    : " + one_line(about))
    return "\n".join(lines)


MAX_LINES = 200  # a request longer than this would scroll its own header off a terminal


def render_arguments(request: ConsentRequest, max_lines: int | None = None) -> str:
    """The request's details; keys, paths and diff labels stay on one line each (a newline in
    a model-chosen path must not start a line that looks like the prompt's own). With
    ``max_lines`` the text is cut there and says how many lines were left out."""
    parts: list[str] = []
    if request.changed is not None:
        parts.append("TOOL DEFINITION CHANGED since it was approved:\n" + definition_diff(
            request.changed.old, request.changed.new))
    if request.paths:
        parts.append("Paths:\n" + "\n".join(f"  {one_line(p)}" for p in request.paths))
    parts.append("Arguments:\n" + (_render_value(request.arguments, 1) if request.arguments else "  (none)"))
    parts.extend(_edit_diffs(request.arguments, ""))
    text = visible("\n\n".join(parts))
    if max_lines is not None:
        lines = text.split("\n")
        if len(lines) > max_lines:
            cut = len(lines) - max_lines
            text = "\n".join(lines[:max_lines]) + f"\n… {cut} more line{'s' if cut != 1 else ''} not shown"
    return text


def render_request(request: ConsentRequest, max_lines: int | None = None) -> str:
    return render_header(request) + "\n\n" + render_arguments(request, max_lines)


def render_summary(request: ConsentRequest) -> str:
    """One line naming what is decided (server, tool, main path): printed right above the menu,
    so whatever scrolled past, the line the person answers under is Glyph's own."""
    main = f"  {one_line(request.paths[0])}" if request.paths else ""
    more = f" (+{len(request.paths) - 1} more)" if len(request.paths) > 1 else ""
    return f"Allow {one_line(request.server)} → {one_line(request.tool)}{main}{more}?"


def definition_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    a = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False)
    b = json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False)
    return visible("\n".join(text_diff(a, b, "approved", "now")))


def text_lines(text: str) -> list[str]:
    """``text`` in lines as a file holds them: split at ``\n`` only, each line keeping its ``\n``.

    Not ``str.splitlines``: it also breaks at \\x0b, \\x0c, \\x1c-\\x1e, \\x85, U+2028 and U+2029,
    so an edit that turns a newline into one of those would compare equal, line for line, and
    show no diff while it changes the file (a check folded into the comment above it)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def text_diff(old: str, new: str, old_label: str = "", new_label: str = "") -> list[str]:
    """A unified diff of two texts, one output line per element: texts that differ in any
    character give a non-empty diff. Where only one of them ends with a newline, its last
    line without one says so, as ``diff`` does (fragments without one, the usual edit, do not)."""
    marked = old.endswith("\n") != new.endswith("\n")
    out: list[str] = []
    for line in difflib.unified_diff(text_lines(old), text_lines(new), old_label, new_label, lineterm=""):
        if line.endswith("\n"):
            out.append(line[:-1])
        else:
            out.append(line)
            if marked and not line.startswith(("+++", "---", "@@")):
                out.append("\\ No newline at end of text")
    return out


def _render_value(value: Any, depth: int) -> str:
    pad = "  " * depth
    if isinstance(value, dict) and value:
        lines: list[str] = []
        for raw_key, item in value.items():
            key = one_line(str(raw_key))
            if isinstance(item, str) and "\n" in item and _norm(str(raw_key)) not in _PATH_KEYS:
                lines.append(f"{pad}{key}: |")
                lines.append(_indent(item, pad + "  "))
            elif isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(_render_value(item, depth + 1))
            else:
                lines.append(f"{pad}{key}: {json.dumps(item, ensure_ascii=False)}")
        return "\n".join(lines)
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            body = _render_value(item, depth + 1).lstrip()
            lines.append(f"{pad}- {body}")
        return "\n".join(lines)
    if isinstance(value, str) and "\n" in value:
        return "|\n" + _indent(value, pad + "  ")
    return pad + json.dumps(value, ensure_ascii=False)


def _indent(text: str, pad: str) -> str:
    """A block indented at each ``\n`` (``textwrap.indent`` would also indent after a \\x0c)."""
    return "\n".join(pad + line for line in text.rstrip("\n").split("\n"))


_PATH_KEYS = frozenset({"path", "filepath", "file", "filename", "source", "destination"})  # one line each


def _path_of(value: dict[str, Any]) -> str | None:
    for key, item in value.items():
        if _norm(key) in ("path", "filepath", "file", "filename") and isinstance(item, str):
            return item
    return None


class EditPair(NamedTuple):
    old: str
    new: str
    every: bool  # ``replace_all``: every match of ``old`` is replaced, not one


def _every(value: dict[str, Any]) -> bool:
    return any(_norm(str(k)) == "replaceall" and v is True for k, v in value.items())


def edit_pairs(value: Any) -> Iterator[EditPair]:
    """Every old/new text pair in a call's arguments, wherever it sits: what :func:`render_arguments`
    shows as diffs (the tray app's consent dialog counts the changed lines from these)."""
    if isinstance(value, list):
        for item in value:
            yield from edit_pairs(item)
        return
    if not isinstance(value, dict):
        return
    keys = {_norm(str(k)): k for k in value}
    for old_key, new_key in _OLD_NEW.items():
        if old_key in keys and new_key in keys:
            old, new = value[keys[old_key]], value[keys[new_key]]
            if isinstance(old, str) and isinstance(new, str):
                yield EditPair(old, new, _every(value))
    for item in value.values():
        if isinstance(item, dict | list):
            yield from edit_pairs(item)


def path_argument(arguments: Any) -> str | None:
    """The file a call names at its top level (``path``, ``file_path``, ...), if any."""
    return _path_of(arguments) if isinstance(arguments, dict) else None


def _edit_diffs(value: Any, where: str, path: str | None = None) -> Iterator[str]:
    """A unified diff for every old/new text pair, wherever it sits in the arguments."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _edit_diffs(item, f"{where}[{i}]", path)
        return
    if not isinstance(value, dict):
        return
    path = _path_of(value) or path
    keys = {_norm(k): k for k in value}
    for old_key, new_key in _OLD_NEW.items():
        if old_key in keys and new_key in keys:
            old, new = value[keys[old_key]], value[keys[new_key]]
            if isinstance(old, str) and isinstance(new, str):
                label = one_line(" ".join(x for x in (path, where) if x) or "edit")
                every = ", every match" if _every(value) else ""
                yield "Diff:\n" + "\n".join(text_diff(old, new, f"{label} (before{every})", f"{label} (after{every})"))
    for key, item in value.items():
        if isinstance(item, dict | list):
            yield from _edit_diffs(item, f"{where}.{key}" if where else str(key), path)
