"""Roots: the only way Rune turns a path string into something it opens.

Every path is walked one component at a time from the root's directory fd with
`O_NOFOLLOW`, so what Rune checks is what it opens: there is no path string the
kernel re-resolves later, and a component swapped for a symlink between the check
and the open makes the open fail (and Rune look again) instead of following it.

Symlinks are resolved by Rune, never by the kernel. A symlink is followed when its
target stays inside the *same* root (relative or absolute target); one that leaves
the root, or is dangling at the end of the path, is refused. Tools that act on a
link itself (move, file_info, git paths) do not follow the last component.
"""

from __future__ import annotations

import copy
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rune.errors import RuneError
from rune.exclude import Exclusions

# getattr: the names are POSIX-only; on other platforms Sandbox() refuses to start instead.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | CLOEXEC
FILE_FLAGS = os.O_RDONLY | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block
MAX_HOPS = 40  # symlinks followed (and races retried) in one path, as the kernel's ELOOP limit


def supported() -> bool:
    """True where the fd-relative calls the sandbox needs exist (Linux, macOS, BSDs)."""
    return os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")


def _components(parts: Sequence[str]) -> list[str]:
    return [p for p in parts if p not in ("", ".")]


@dataclass(frozen=True)
class Root:
    index: int
    path: str  # absolute and lexically normalised, as the host gave it
    real: str  # the same directory with every symlink resolved
    fd: int
    forms: tuple[tuple[str, ...], ...]  # the component tuples an absolute path may start with

    def strip(self, components: Sequence[str]) -> list[str] | None:
        """The components below this root, or None when the path is not under it."""
        best: int | None = None
        for form in self.forms:
            n = len(form)
            if tuple(components[:n]) == form and (best is None or n > best):
                best = n
        return None if best is None else list(components[best:])


@dataclass(frozen=True)
class Location:
    """A place inside a root, as physical components (no symlink except maybe the last)."""

    root: Root
    parts: tuple[str, ...]

    @property
    def rel(self) -> str:
        return "/".join(self.parts) or "."

    @property
    def real(self) -> str:
        return os.path.join(self.root.real, *self.parts)

    def child(self, name: str) -> Location:
        return Location(self.root, (*self.parts, name))

    def contains(self, other: Location) -> bool:
        return other.root is self.root and other.parts[: len(self.parts)] == self.parts


@dataclass(frozen=True)
class Target:
    """A resolved path: the fd of its parent directory and its name there.

    `name` is "." when the path resolved to a directory that is `dirfd` itself (the
    root, or a path ending in ".."). `st` is the lstat of the target, None if absent.
    """

    loc: Location
    dirfd: int
    name: str
    st: os.stat_result | None

    @property
    def exists(self) -> bool:
        return self.st is not None

    @property
    def is_dir(self) -> bool:
        return self.st is not None and stat.S_ISDIR(self.st.st_mode)


class Sandbox:
    """The roots Rune was handed, each held open as a directory fd for Rune's lifetime."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        if not supported():
            raise RuneError("unavailable", "Rune needs fd-relative file calls (POSIX); this platform lacks them")
        if not roots:
            raise RuneError("invalid_arguments", "Rune needs at least one root")
        opened: list[Root] = []
        try:
            for index, given in enumerate(roots):
                path = os.path.abspath(os.fspath(given))
                if "\0" in path:
                    raise RuneError("invalid_arguments", "root path contains a NUL byte")
                try:
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | CLOEXEC)
                except OSError as exc:
                    raise RuneError("not_found", f"root {path!r} is not an openable directory: {exc.strerror}") from exc
                real = os.path.realpath(path)
                here, there = os.fstat(fd), os.stat(real)
                if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
                    os.close(fd)
                    raise RuneError("io_error", f"root {path!r} changed while it was being opened")
                forms = {tuple(_components(path.split("/"))), tuple(_components(real.split("/")))}
                opened.append(Root(index, path, real, fd, tuple(sorted(forms, key=len, reverse=True))))
        except BaseException:
            for root in opened:
                os.close(root.fd)
            raise
        self.roots: tuple[Root, ...] = tuple(opened)
        self._open = [True]  # shared with views, so closing the sandbox closes them too
        self.exclusions = Exclusions()

    def view(self, exclusions: Exclusions) -> Sandbox:
        """The same roots (and fds) with other exclusions, for one call. Only the original closes."""
        clone = copy.copy(self)
        clone.exclusions = exclusions
        return clone

    def close(self) -> None:
        if self._open[0]:
            self._open[0] = False
            for root in self.roots:
                os.close(root.fd)

    # -- naming ---------------------------------------------------------------------------

    def display(self, loc: Location) -> str:
        """How outputs name a place: relative to the first root, else absolute.

        Relative inputs resolve against the first root, so every output path can be passed
        back as an input.
        """
        shown = loc.rel if loc.root.index == 0 else os.path.join(loc.root.path, *loc.parts)
        try:
            shown.encode("utf-8")
        except UnicodeEncodeError:  # a name that is not UTF-8 on disk: show it, lossily
            shown = shown.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return shown

    def split(self, path: str) -> tuple[Root, list[str]]:
        """The root a path belongs to and its raw components below it (".." kept)."""
        if not isinstance(path, str):
            raise RuneError("invalid_arguments", "path must be a string")
        if "\0" in path:
            raise RuneError("invalid_arguments", "path contains a NUL byte")
        if not path.startswith("/"):
            return self.roots[0], path.split("/")
        comps = _components(path.split("/"))
        best: tuple[Root, list[str]] | None = None
        for root in self.roots:
            rest = root.strip(comps)
            if rest is not None and (best is None or len(rest) < len(best[1])):
                best = (root, rest)
        if best is None:
            allowed = ", ".join(r.path for r in self.roots)
            raise RuneError("outside_roots", f"{path!r} is outside the roots ({allowed})")
        return best

    # -- resolution -----------------------------------------------------------------------

    @contextmanager
    def target(
        self, path: str, *, follow: bool = True, write: bool = False, create_dirs: bool = False,
        content: bool = False,
    ) -> Iterator[Target]:
        """Resolve `path`; the parent directory fd stays open for the `with` block.

        follow: follow a symlink in the last component (when it stays in the root).
        write: refuse any component named .git (Rune never writes git's own files).
        create_dirs: create missing intermediate directories on the way.
        content: the caller will read or show the content, so withheld paths are refused too.
        """
        if self.exclusions:
            self.check_excluded(path, self.lexical(path), content=content)
        t = self._resolve(path, follow=follow, write=write, create_dirs=create_dirs)
        try:
            if self.exclusions:
                self.check_excluded(path, t.loc, content=content)
            yield t
        finally:
            os.close(t.dirfd)

    def lexical(self, path: str) -> Location:
        """Where `path` points by its spelling alone (".." drops a component, symlinks not read)."""
        root, raw = self.split(path)
        parts: list[str] = []
        for comp in _components(raw):
            if comp == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(comp)
        return Location(root, tuple(parts))

    def check_excluded(self, path: str, loc: Location, *, content: bool) -> None:
        """Refuse a path the caller excluded, by its name or by where it resolves."""
        if self.exclusions.withheld(loc) if content else self.exclusions.hidden(loc):
            what = "its content is" if content and not self.exclusions.hidden(loc) else "it is"
            raise RuneError("excluded", f"{path!r}: {what} excluded from this call")

    def _check_open(self) -> None:
        # a closed root fd's number may already belong to some other directory
        if not self._open[0]:
            raise RuneError("unavailable", "this Rune is closed")

    def _resolve(self, path: str, *, follow: bool, write: bool, create_dirs: bool) -> Target:
        self._check_open()
        root, raw = self.split(path)
        depth = 0
        for comp in _components(raw):  # an obvious ".." escape fails before anything is created
            depth += -1 if comp == ".." else 1
            if depth < 0:
                raise RuneError("outside_roots", f"{path!r} leads outside the root {root.path}")
        pending = list(reversed(_components(raw)))
        stack: list[int] = [root.fd]  # stack[0] is the root's own fd and is never closed here
        parts: list[str] = []
        hops = 0
        via_link = False  # the last component was a symlink we followed

        def where(name: str = "") -> str:
            loc = Location(root, (*parts, name) if name else tuple(parts))
            return self.display(loc)

        def done(name: str, st: os.stat_result | None) -> Target:
            loc = Location(root, tuple(parts) if name == "." else (*parts, name))
            return Target(loc, os.dup(stack[-1]), name, st)

        try:
            while pending:
                name = pending.pop()
                if name == "..":
                    if not parts:
                        raise RuneError("outside_roots", f"{path!r} leads outside the root {root.path}")
                    parts.pop()
                    os.close(stack.pop())
                    continue
                last = not pending
                if write and name.lower() == ".git":
                    raise RuneError("protected", f"{path!r}: Rune does not write inside .git (use the git tools)")
                dirfd = stack[-1]
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        if via_link:
                            raise RuneError("not_found", f"{path!r} is a dangling symlink") from None
                        return done(name, None)
                    if not create_dirs:
                        raise RuneError("not_found", f"{where(name)} does not exist") from None
                    if hops > MAX_HOPS:
                        raise RuneError("io_error", f"{path!r} kept changing while being created") from None
                    try:
                        os.mkdir(name, 0o777, dir_fd=dirfd)
                    except FileExistsError:
                        pass
                    pending.append(name)
                    hops += 1
                    continue
                if stat.S_ISLNK(st.st_mode) and (follow or not last):
                    hops += 1
                    if hops > MAX_HOPS:
                        raise RuneError("io_error", f"{path!r}: too many levels of symbolic links")
                    link = os.readlink(name, dir_fd=dirfd)
                    if link.startswith("/"):
                        rest = root.strip(_components(link.split("/")))
                        if rest is None:
                            raise RuneError(
                                "outside_roots", f"{path!r}: the symlink {where(name)} points outside the root"
                            )
                        while len(stack) > 1:
                            os.close(stack.pop())
                        parts.clear()
                        comps = rest
                    else:
                        comps = link.split("/")
                    pending.extend(reversed(_components(comps)))
                    via_link = via_link or last
                    continue
                if last:
                    return done(name, st)
                if not stat.S_ISDIR(st.st_mode):
                    raise RuneError("not_a_directory", f"{where(name)} is not a directory")
                try:
                    fd = os.open(name, DIR_FLAGS, dir_fd=dirfd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT) and hops < MAX_HOPS:
                        hops += 1  # swapped between the lstat and the open: look at it again
                        pending.append(name)
                        continue
                    raise
                stack.append(fd)
                parts.append(name)
            return done(".", os.fstat(stack[-1]))
        finally:
            for fd in stack[1:]:
                os.close(fd)

    # -- opening --------------------------------------------------------------------------

    def open_file(self, path: str) -> tuple[Location, int, os.stat_result]:
        """An fd on a regular file (in-root symlinks followed) to read; the caller closes it."""
        for _ in range(3):
            with self.target(path, content=True) as t:
                if t.st is None:
                    raise RuneError("not_found", f"{self.display(t.loc)} does not exist")
                if t.is_dir:
                    raise RuneError("is_a_directory", f"{self.display(t.loc)} is a directory")
                try:
                    fd = os.open(t.name, FILE_FLAGS, dir_fd=t.dirfd)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        continue  # became a symlink after the check: resolve it again
                    raise
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    raise RuneError("not_a_file", f"{self.display(t.loc)} is not a regular file")
                return t.loc, fd, st
        raise RuneError("io_error", f"{path!r} kept changing while being opened")

    def open_dir(self, path: str) -> tuple[Location, int]:
        """A fresh fd on a directory (in-root symlinks followed); the caller closes it."""
        for _ in range(3):
            with self.target(path) as t:
                if t.st is None:
                    raise RuneError("not_found", f"{self.display(t.loc)} does not exist")
                if not t.is_dir:
                    raise RuneError("not_a_directory", f"{self.display(t.loc)} is not a directory")
                try:
                    return t.loc, os.open(t.name, DIR_FLAGS, dir_fd=t.dirfd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        continue
                    raise
        raise RuneError("io_error", f"{path!r} kept changing while being opened")

    def open_location(self, loc: Location) -> int:
        """A fresh fd on a directory already resolved to physical components."""
        self._check_open()
        fd = os.dup(loc.root.fd)
        try:
            for name in loc.parts:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            out = os.open(".", DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        return out


def read_all(fd: int, limit: int | None = None) -> bytes:
    """Read a file fd to the end (or `limit` bytes) without closing it."""
    chunks: list[bytes] = []
    got = 0
    while limit is None or got < limit:
        chunk = os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
