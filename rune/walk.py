"""A directory walker on fds that honours ignore files like ripgrep does.

Used by directory_tree, and by glob and grep when no ripgrep binary is available. It
never follows symlinks (they are listed, not entered), always skips `.git`, skips
dotfiles unless asked, skips what the caller excluded, and applies `.gitignore`, `.ignore`, `.rgignore` and
`.git/info/exclude` from the root down (deeper files and later lines win).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pathspec import GitIgnoreSpec

from rune.sandbox import DIR_FLAGS, FILE_FLAGS, Location, Sandbox, read_all

IGNORE_FILES = (".gitignore", ".ignore", ".rgignore")
MAX_DEPTH = 256  # no real tree is deeper; it bounds recursion

Ignores = tuple[tuple[tuple[str, ...], GitIgnoreSpec], ...]


@dataclass(frozen=True)
class Entry:
    parts: tuple[str, ...]  # below the root
    rel: str  # below the walk's base, "/"-separated
    kind: str  # file | directory | symlink | other
    size: int | None  # files only, when the walker was asked for sizes
    depth: int  # 1 for the base's own children


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _kind(e: os.DirEntry[str]) -> str:
    """The entry's type from d_type where the OS gives it, without a stat call."""
    if e.is_symlink():
        return "symlink"
    if e.is_dir(follow_symlinks=False):
        return "directory"
    if e.is_file(follow_symlinks=False):
        return "file"
    return "other"


def _read_small(dirfd: int, name: str) -> str | None:
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dirfd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return read_all(fd, 1 << 20).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _info_exclude(dirfd: int) -> str | None:
    """The repository's .git/info/exclude when `dirfd` holds a .git directory."""
    fds: list[int] = []
    try:
        cur = dirfd
        for name in (".git", "info"):
            cur = os.open(name, DIR_FLAGS, dir_fd=cur)
            fds.append(cur)
        return _read_small(cur, "exclude")
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)


def load_ignores(dirfd: int) -> GitIgnoreSpec | None:
    """The ignore rules a directory adds, or None when it adds none."""
    lines: list[str] = []
    for text in (_info_exclude(dirfd), *(_read_small(dirfd, n) for n in IGNORE_FILES)):
        if text:
            lines.extend(text.splitlines())
    return GitIgnoreSpec.from_lines(lines) if lines else None


def is_ignored(ignores: Ignores, parts: tuple[str, ...], is_dir: bool) -> bool:
    for base, spec in reversed(ignores):
        rel = "/".join(parts[len(base):]) + ("/" if is_dir else "")
        verdict = spec.check_file(rel).include
        if verdict is not None:
            return verdict
    return False


class Walker:
    """One walk below `base`; `walk()` yields each entry with the fd of its directory."""

    def __init__(
        self,
        sandbox: Sandbox,
        base: Location,
        *,
        hidden: bool,
        gitignore: bool,
        max_depth: int | None = None,
        sizes: bool = False,
        skip: Callable[[Location], bool] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.sizes = sizes
        self.skip = skip  # excluded entries: neither yielded nor entered
        self.base = base
        self.hidden = hidden
        self.gitignore = gitignore
        self.max_depth = min(max_depth or MAX_DEPTH, MAX_DEPTH)

    def _ancestor_ignores(self) -> Ignores:
        """Ignore files in the directories from the root down to (not including) the base."""
        out: list[tuple[tuple[str, ...], GitIgnoreSpec]] = []
        fd = self.sandbox.open_location(Location(self.base.root, ()))
        try:
            for i, name in enumerate(self.base.parts):
                spec = load_ignores(fd)
                if spec is not None:
                    out.append((self.base.parts[:i], spec))
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        finally:
            os.close(fd)
        return tuple(out)

    def walk(self) -> Iterator[tuple[Entry, int]]:
        ignores = self._ancestor_ignores() if self.gitignore else ()
        fd = self.sandbox.open_location(self.base)
        try:
            yield from self._walk(fd, self.base.parts, 1, ignores)
        finally:
            os.close(fd)

    def _walk(self, fd: int, parts: tuple[str, ...], depth: int, ignores: Ignores) -> Iterator[tuple[Entry, int]]:
        if self.gitignore:
            spec = load_ignores(fd)
            if spec is not None:
                ignores = (*ignores, (parts, spec))
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        cut = len(self.base.parts)
        for e in entries:
            name = e.name
            if name == ".git" or (not self.hidden and name.startswith(".")):
                continue
            try:
                kind = _kind(e)
                size = e.stat(follow_symlinks=False).st_size if self.sizes and kind == "file" else None
            except OSError:
                continue  # vanished while we looked
            child = (*parts, name)
            if ignores and is_ignored(ignores, child, kind == "directory"):
                continue
            if self.skip is not None and self.skip(Location(self.base.root, child)):
                continue
            entry = Entry(child, "/".join(child[cut:]), kind, size, depth)
            yield entry, fd
            if kind == "directory" and depth < self.max_depth:
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # unreadable, or swapped for a symlink: do not enter
                try:
                    yield from self._walk(sub, child, depth + 1, ignores)
                finally:
                    os.close(sub)
