"""Defence in depth for deny rules: a result that names a denied path is withheld.

Glyph hands a call's deny globs to Rune, which leaves those paths out of what it reads and
lists. Glyph then checks the result itself, so a server that ignores the exclusions (an
older Rune, any other MCP server) cannot slip a denied file past a deny rule by name. What
is checked, in ``structuredContent`` (or the JSON text when there is none):

- strings under path-like keys (``path``, ``paths``, ``old_path``, ``orig_path``, ``file``,
  ... as ``glyph.paths`` recognises them), ``entries[].name`` joined to the listing's
  ``path``, and strings in a ``matches`` list (a glob's answer);
- in ``diff``, ``output`` and ``patch`` text: git's file section headers (both sides of a
  rename or copy, binary and combined diffs) and ``git show``'s tree listings, relative to
  the result's ``repo`` when it has one.

Names are checked against the rules that hide names; a path whose content sits next to it
(``content``, ``text``, ``lines``, ``diff``) and every diff section are checked against the
content-only (``show_names``) rules too. File *content* cannot be recognised by Glyph: that
part rests on the server executing the exclusions (Rune does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types

from glyph.config import Rule
from glyph.paths import is_path_name, path_covered
from glyph.policy import Exclusions
from rune.git import split_rev_path
from rune.patch import section_names

TEXT_KEYS = frozenset({"diff", "output", "patch"})
CONTENT_KEYS = frozenset({"content", "text", "lines", "diff"})
MAX_DEPTH = 64


@dataclass(frozen=True)
class Named:
    """A path a result mentions, where it is relative to, and whether content comes with it."""

    name: str
    base: str = ""
    content: bool = False


def withheld_by(result: types.CallToolResult, exclusions: Exclusions, roots: Sequence[Path]) -> Rule | None:
    """The deny rule a result breaks by naming a path it covers, or None."""
    if not exclusions or not roots:
        return None
    seen: set[Named] = set()
    for named in mentioned(result):
        if named in seen:
            continue  # a grep names one file once per match
        seen.add(named)
        path = _place(named, roots)
        if path is None:
            continue
        rules = (*exclusions.hide, *(exclusions.content if named.content else ()))
        for rule in rules:
            assert rule.path is not None
            if path_covered(os.path.expanduser(rule.path), path, roots, exclusions.fold):
                return rule
    return None


def _place(named: Named, roots: Sequence[Path]) -> Path | None:
    """Where a named path is, lexically (no file system access: the server may be elsewhere)."""
    name = named.name
    if not name or "\0" in name or len(name) > 4096:
        return None
    if name.startswith("file://"):
        name = name[len("file://"):]
    base = named.base if os.path.isabs(named.base) else os.path.join(roots[0], named.base)
    return Path(os.path.normpath(os.path.join(base, os.path.expanduser(name))))


def mentioned(result: types.CallToolResult) -> Iterator[Named]:
    if result.structured_content is not None:
        yield from _walk(result.structured_content, "", 0)
        return
    for block in result.content:
        if isinstance(block, types.TextContent):
            try:
                yield from _walk(json.loads(block.text), "", 0)
            except ValueError:
                yield from _text(block.text, "")


def _walk(value: Any, repo: str, depth: int) -> Iterator[Named]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, repo, depth + 1)
        return
    if not isinstance(value, dict):
        return
    if isinstance(value.get("repo"), str):
        repo = value["repo"]
    carries = any(k in CONTENT_KEYS for k in value)
    listing: str = value["path"] if isinstance(value.get("path"), str) else ""
    for key, item in value.items():
        key = str(key)
        if is_path_name(key):
            for name in ([item] if isinstance(item, str) else item if isinstance(item, list) else []):
                if isinstance(name, str):
                    yield Named(name, "", carries)
        elif key == "matches" and isinstance(item, list):
            yield from (Named(m) for m in item if isinstance(m, str))
        elif key == "entries" and isinstance(item, list):
            yield from (Named(e["name"], listing) for e in item if isinstance(e, dict) and isinstance(e.get("name"), str))
        if key in TEXT_KEYS and isinstance(item, str):
            yield from _text(item, repo)
        elif isinstance(item, dict | list):
            yield from _walk(item, repo, depth + 1)


def _text(text: str, repo: str) -> Iterator[Named]:
    if text.startswith("tree "):
        header, _, rest = text.partition("\n\n")
        split = split_rev_path(header[len("tree "):])
        folder = os.path.join(repo, split[1]) if split is not None else None
        if folder is not None:
            for line in rest.split("\n"):
                if line:
                    yield Named(line.rstrip("/"), folder)
    start = 0 if text.startswith("diff --") else text.find("\ndiff --")
    while start != -1:
        begin = start if text.startswith("diff --", start) else start + 1
        end = text.find("\ndiff --", begin)
        names = section_names(text[begin:end if end != -1 else len(text)])
        for name in names or ():
            yield Named(name, repo, True)
        start = end
