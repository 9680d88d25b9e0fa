"""Which tool arguments are file paths, where they point, and whether that is inside the roots.

Glyph reads paths out of arguments so policy can match them and so calls can be kept inside
the roots. An argument is a path when its schema property is named like one (``path``,
``paths``, ``file``, ``directory``, ``source``, ``destination``, ... or a name ending in
``path``/``file``/``dir``), when its schema says ``"format": "path"`` (or ``file-path``,
``directory-path``, ``uri`` with a ``file://`` value), or when any string value is a
``file://`` URI. Nested objects and arrays are walked, so ``edits[].path`` counts too.

Paths are resolved the way a rooted server would: ``~`` expanded, relative paths against
the first root, then ``realpath`` so ``..`` and symlinks cannot hide an escape. Rune checks
again on its side; this is Glyph's independent check.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from glyph.casefold import fold_glob
from rune.exclude import glob_to_regex as rune_glob_to_regex

PATH_NAMES = frozenset({
    "path", "paths", "file", "files", "filename", "filenames", "filepath", "directory",
    "directories", "dir", "dirs", "folder", "source", "sources", "destination", "src", "dst",
    "dest", "target", "cwd", "root", "oldpath", "newpath",
})
PATH_SUFFIXES = ("path", "paths", "file", "files", "dir", "directory")
PATH_FORMATS = frozenset({"path", "file-path", "directory-path", "filepath", "file"})


@functools.lru_cache(maxsize=4096)
def is_path_name(name: str) -> bool:
    key = re.sub(r"[_\-\s]", "", name).lower()
    return key in PATH_NAMES or key.endswith(PATH_SUFFIXES)


def _is_path_schema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt.lower() in PATH_FORMATS:
        return True
    items = schema.get("items")
    return isinstance(items, dict) and isinstance(items.get("format"), str) and items["format"].lower() in PATH_FORMATS


def extract_paths(arguments: Any, schema: Any = None) -> list[str]:
    """Every path-like string in the arguments, in order, without duplicates."""
    seen: dict[str, None] = {}
    for value in _walk(arguments, schema, in_path=False):
        seen.setdefault(value, None)
    return list(seen)


def _walk(value: Any, schema: Any, in_path: bool) -> Iterator[str]:
    if isinstance(value, str):
        if in_path or _is_path_schema(schema) or value.startswith("file://"):
            yield value
    elif isinstance(value, list):
        items = schema.get("items") if isinstance(schema, dict) else None
        for item in value:
            yield from _walk(item, items, in_path or _is_path_schema(schema))
    elif isinstance(value, dict):
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        for key, item in value.items():
            sub = props.get(key) if isinstance(props, dict) else None
            yield from _walk(item, sub, is_path_name(str(key)) and not isinstance(item, dict))


MAX_PATH_BYTES = 4096  # PATH_MAX on Linux; realpath's cost grows with the square of a path's length


class PathError(ValueError):
    """A path argument that cannot name a file here; the call is refused, never guessed at."""


def resolve(value: str, roots: Sequence[Path]) -> Path:
    """Where a path argument points on this machine (relative means: inside the first root).

    Raises :class:`PathError` for what no file system path can be (a NUL byte, more than
    :data:`MAX_PATH_BYTES`, text that does not encode, ``~user`` with no such user).
    """
    try:
        if value.startswith("file://"):
            value = url2pathname(unquote(urlparse(value).path))
        if "\0" in value:
            raise PathError("a path argument contains a NUL byte")
        if len(os.fsencode(value)) > MAX_PATH_BYTES:
            raise PathError(f"a path argument is longer than {MAX_PATH_BYTES} bytes")
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = (roots[0] if roots else Path.cwd()) / p
        return Path(os.path.realpath(p))
    except PathError:
        raise
    except (ValueError, RuntimeError, OSError) as exc:  # UnicodeError is a ValueError
        raise PathError(f"a path argument cannot be resolved ({type(exc).__name__})") from exc


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """True when the resolved path is one of the roots or below one."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def real_roots(roots: Sequence[Path]) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(r)) for r in roots)


# One glob syntax for Glyph's rules and the exclusions Rune carries out for them.
glob_to_regex = functools.lru_cache(maxsize=1024)(rune_glob_to_regex)


def _regex(pattern: str, folded: bool) -> re.Pattern[str]:
    text = pattern.replace(os.sep, "/")
    return glob_to_regex(fold_glob(text) if folded else text)


def path_covered(pattern: str, path: Path, roots: Sequence[Path], fold: Collection[Path] = ()) -> bool:
    """The path, or a directory above it inside its root, matches: a denied directory covers its contents.

    The same rule Rune applies to the exclusions Glyph hands it (and git to pathspecs). Works on
    strings: it runs for every path a result names. Under a root in ``fold`` (a case-insensitive
    file system) the pattern matches in any case.
    """
    expanded = os.path.expanduser(pattern)
    absolute = os.path.isabs(expanded)
    text = path.as_posix()
    if absolute and _regex(expanded, _in_folded(path, fold)).match(text) is not None:
        return True
    for root in roots:
        regex = _regex(expanded, root in fold)
        base = root.as_posix().rstrip("/") + "/"
        if text == base.rstrip("/") or text == base:
            if not absolute and regex.match(".") is not None:
                return True  # a root itself is "." (as path_matches sees it)
            continue
        if not text.startswith(base):
            continue
        comps = text[len(base):].split("/")
        for n in range(1, len(comps) + 1):
            rel = "/".join(comps[:n])
            if regex.match(base + rel if absolute else rel) is not None:
                return True
    return False


def path_matches(pattern: str, path: Path, roots: Sequence[Path], fold: Collection[Path] = ()) -> bool:
    """Absolute (or ``~``) patterns match the absolute path; others match it relative to a root."""
    expanded = os.path.expanduser(pattern)
    if os.path.isabs(expanded):
        return _regex(expanded, _in_folded(path, fold)).match(path.as_posix()) is not None
    for root in roots:
        if path.is_relative_to(root):
            rel = path.relative_to(root).as_posix()
            if _regex(expanded, root in fold).match(rel) is not None:
                return True
    return False


def _in_folded(path: Path, fold: Collection[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in fold)
