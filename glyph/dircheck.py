"""Deny rules for what a folder holds: a call that names a directory acts on everything inside it.

A rule like ``secrets/**`` names the files, not the folder, so ``move secrets pub`` matched
no rule, and afterwards ``pub/key.txt`` matched none either: the rule was walked around by
renaming its folder. The same holds for anything a tool does to a whole folder (move, copy,
delete, ``git add`` of a pathspec). :func:`denied_inside` walks a directory argument (without
following symlinks) and reports the paths inside it that a deny rule covers; the gateway
refuses such a call, naming them. A walk that would exceed :data:`MAX_ENTRIES` is refused
too: a folder too large to check is not assumed clean.

Read-only tools of a server that carries out the call's exclusions (Rune) are exempt: Rune
leaves the denied paths out of what a grep, tree or git diff over the folder reads.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from glyph.config import Rule
from glyph.paths import path_covered

MAX_ENTRIES = 100_000
MAX_NAMED = 5  # how many denied paths a refusal lists


@dataclass(frozen=True)
class Inside:
    """What one directory argument holds that deny rules cover."""

    directory: Path
    denied: tuple[Path, ...] = ()  # the first few found, in walk order
    rule: Rule | None = None  # the rule that covers the first of them
    too_large: bool = False  # the walk stopped at MAX_ENTRIES

    def __bool__(self) -> bool:
        return bool(self.denied) or self.too_large

    def describe(self, roots: Sequence[Path]) -> str:
        where = _shown(self.directory, roots)
        if self.too_large:
            return (f"{where} holds more than {MAX_ENTRIES} entries, too many to check against the deny rules; "
                    f"name a smaller folder or the files themselves")
        assert self.rule is not None
        names = ", ".join(_shown(p, roots) for p in self.denied)
        more = " and more" if len(self.denied) >= MAX_NAMED else ""
        return (f"{where} holds paths that rule {self.rule.index} ({self.rule.action} path {self.rule.path}) "
                f"covers: {names}{more}. A tool given a folder acts on everything inside it")


def _shown(path: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root) and path != root:
            return path.relative_to(root).as_posix()
    return str(path)


def denied_inside(directory: Path, rules: Sequence[Rule], roots: Sequence[Path], fold: Collection[Path] = (),
                  max_entries: int = MAX_ENTRIES) -> Inside:
    """The paths under ``directory`` (not the directory itself) that one of the ``rules`` covers.

    A covered directory is reported and not descended into: everything in it is covered too.
    """
    globs = [r for r in rules if r.path is not None]
    if not globs or not directory.is_dir() or directory.is_symlink():
        return Inside(directory)
    found: list[Path] = []
    first: Rule | None = None
    seen = 0
    for top, dirs, files in os.walk(directory, followlinks=False):
        keep = []
        for name in (*dirs, *files):
            seen += 1
            if seen > max_entries:
                return Inside(directory, tuple(found), first, too_large=not found)
            path = Path(top) / name
            hit = next((r for r in globs if path_covered(r.path or "", path, roots, fold)), None)
            if hit is None:
                if name in dirs:
                    keep.append(name)
                continue
            first = first or hit
            found.append(path)
            if len(found) >= MAX_NAMED:
                return Inside(directory, tuple(found), first)
        dirs[:] = keep
    return Inside(directory, tuple(found), first)
