"""Rune: the Python API Glyph (or anyone) embeds. Construct it with roots, list its tools, call them."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from rune.errors import ErrorCode, RuneError
from rune.exclude import Exclusions
from rune.git import Git
from rune.grep import Searcher
from rune.sandbox import Sandbox
from rune.schema import apply_defaults, validate
from rune.spec import Context, ToolSpec
from rune.tools import BY_NAME, TOOLS

_ERRNO_CODES: dict[int, ErrorCode] = {
    errno.ENOENT: "not_found",
    errno.EEXIST: "exists",
    errno.ENOTEMPTY: "exists",
    errno.ENOTDIR: "not_a_directory",
    errno.EISDIR: "is_a_directory",
}


class Rune:
    """Fast local file, search and git tools confined to `roots`. No policy: whoever holds a
    Rune may call every tool; consent and audit belong to the caller (Glyph).

    roots: directories the tools may touch; relative paths resolve against the first.
    ripgrep: True finds the bundled/installed rg, a str names the binary, False uses Python.
    git: the git executable (default: found on PATH).
    git_identity: (name, email) for commits when the repository sets none (default: the
        user's global git config, read once).
    git_filters: filter drivers git may run, e.g. rune.git.LFS_FILTERS; all others are off.
    exclude: glob patterns of paths every call treats as absent: never read, shown or listed,
        and refused when named (rune.exclude describes the syntax).
    exclude_content: glob patterns of paths whose names may be listed but whose content no
        call reads or shows.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        *,
        ripgrep: str | bool = True,
        git: str | None = None,
        git_identity: tuple[str, str] | None = None,
        git_filters: Mapping[str, Mapping[str, str]] | None = None,
        exclude: Iterable[str] = (),
        exclude_content: Iterable[str] = (),
    ) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        exclusions = Exclusions.of(exclude, exclude_content)  # bad patterns fail before any fd is opened
        self._sandbox = Sandbox(roots)
        self._sandbox.exclusions = exclusions
        searcher = Searcher(ripgrep)
        self._ctx = Context(self._sandbox, searcher, Git(self._sandbox, executable=git, identity=git_identity,
                                                            filters=git_filters))
        self.tools: tuple[ToolSpec, ...] = TOOLS

    @property
    def roots(self) -> tuple[str, ...]:
        """The roots as absolute paths, in the order given."""
        return tuple(r.path for r in self._sandbox.roots)

    @property
    def exclusions(self) -> Exclusions:
        """The patterns every call excludes (a call may add its own)."""
        return self._sandbox.exclusions

    @property
    def grep_engine(self) -> str:
        """"ripgrep" or "python"."""
        return self._ctx.searcher.engine

    def tool(self, name: str) -> ToolSpec:
        try:
            return BY_NAME[name]
        except KeyError:
            raise RuneError("unknown_tool", f"no tool named {name!r}") from None

    async def call(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                   exclude: Iterable[str] = (), exclude_content: Iterable[str] = ()) -> dict[str, Any]:
        """Run a tool; returns its structured result (valid against its output schema).

        ``exclude`` / ``exclude_content`` add to the Rune's own exclusions for this call only.
        Raises RuneError for anything the caller did or the tree refused; its `code` is stable.
        """
        spec = self.tool(name)
        args = dict(arguments or {})
        validate(spec.input_schema, args)
        ctx = self._ctx
        exclusions = self._sandbox.exclusions.merged(exclude, exclude_content)
        if exclusions is not self._sandbox.exclusions:
            sandbox = self._sandbox.view(exclusions)
            ctx = Context(sandbox, ctx.searcher, ctx.git.view(sandbox))
        try:
            return await spec.handler(ctx, apply_defaults(spec.input_schema, args))
        except RuneError:
            raise
        except OSError as exc:
            code = _ERRNO_CODES.get(exc.errno or 0, "io_error")
            where = f" ({exc.filename})" if isinstance(exc.filename, str) and "/" not in exc.filename else ""
            raise RuneError(code, f"{name}: {exc.strerror or exc}{where}") from exc

    def close(self) -> None:
        """Close the roots' directory fds. Calls after this fail."""
        self._sandbox.close()

    def __enter__(self) -> Rune:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Rune:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
