"""File tools: read, write, edit, list, tree, move, mkdir, info. All paths go through the sandbox."""

from __future__ import annotations

import difflib
import os
import secrets
import stat
from collections import deque
from datetime import UTC, datetime
from typing import IO

from rune.errors import RuneError
from rune.sandbox import CLOEXEC, FILE_FLAGS, NOFOLLOW, Location, read_all
from rune.schema import JSON, array, boolean, integer, nullable, obj, string
from rune.spec import READ_ONLY, Context, ToolAnnotations, ToolSpec, threaded
from rune.walk import Walker, kind_of

BINARY_PROBE = 8192  # a NUL byte in the first 8 KiB marks a file binary, as git and ripgrep do
READ_MAX_BYTES = 256 * 1024
EDIT_MAX_BYTES = 16 * 1024 * 1024

PATH = string("A path inside the roots: relative to the first root, or absolute.", minLength=1)


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _is_binary(head: bytes) -> bool:
    return b"\0" in head[:BINARY_PROBE]


def _lines(text: str) -> list[str]:
    """Split on "\\n" only, keeping the ends (str.splitlines also splits on \\f, \\x1c...)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def unified_diff(before: str, after: str, name: str) -> str:
    out: list[str] = []
    for line in difflib.unified_diff(_lines(before), _lines(after), f"a/{name}", f"b/{name}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def atomic_write(dirfd: int, name: str, data: bytes, old: os.stat_result | None) -> None:
    """Write a sibling temp file and rename it over `name`: readers never see half a file,
    and a symlink or hard link swapped in at `name` is replaced, never written through."""
    tmp = f".{name[:80]}.rune-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o666, dir_fd=dirfd)
    try:
        try:
            if old is not None:
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dirfd)
        except OSError:
            pass
        raise


# -- read_file ----------------------------------------------------------------------------


def _count_rest(f: IO[bytes]) -> int:
    n, last = 0, b"\n"
    while chunk := f.read(1 << 20):
        n += chunk.count(b"\n")
        last = chunk[-1:]
    return n + (last != b"\n")


def read_text(ctx: Context, path: str, *, start: int | None = None, end: int | None = None,
              head: int | None = None, tail: int | None = None, max_bytes: int = READ_MAX_BYTES) -> JSON:
    loc, fd, st = ctx.sandbox.open_file(path)
    shown = ctx.sandbox.display(loc)
    with os.fdopen(fd, "rb", buffering=1 << 16) as f:
        if _is_binary(f.peek(BINARY_PROBE)[:BINARY_PROBE]):  # type: ignore[attr-defined]
            raise RuneError("binary", f"{shown} is a binary file")
        picked: list[tuple[int, bytes]] = []
        total = 0
        if tail is not None:
            ring: deque[tuple[int, bytes]] = deque(maxlen=tail)
            for total, line in enumerate(f, 1):
                ring.append((total, line))
            picked = list(ring)
        else:
            lo = start or 1
            hi = head if head is not None else end
            for total, line in enumerate(f, 1):
                if hi is not None and total > hi:
                    total += _count_rest(f)
                    break
                if total >= lo:
                    picked.append((total, line))
    chosen, truncated = _within(picked, max_bytes, keep_last=tail is not None)
    return {
        "path": shown,
        "content": b"".join(line for _, line in chosen).decode("utf-8", "replace"),
        "start_line": chosen[0][0] if chosen else None,
        "end_line": chosen[-1][0] if chosen else None,
        "total_lines": total,
        "size": st.st_size,
        "truncated": truncated,
    }


def _within(lines: list[tuple[int, bytes]], budget: int, *, keep_last: bool) -> tuple[list[tuple[int, bytes]], bool]:
    """As many lines as fit in `budget` bytes (from the end for tail); a first line too long
    for the budget is cut rather than dropped."""
    order = list(reversed(lines)) if keep_last else lines
    out: list[tuple[int, bytes]] = []
    used = 0
    for n, line in order:
        if used + len(line) > budget:
            if not out:
                out.append((n, line[-budget:] if keep_last else line[:budget]))
                used = budget
            return (list(reversed(out)) if keep_last else out), True
        out.append((n, line))
        used += len(line)
    return (list(reversed(out)) if keep_last else out), False


def read_file(ctx: Context, a: JSON) -> JSON:
    head, tail, start, end = a.get("head"), a.get("tail"), a.get("start_line"), a.get("end_line")
    if head is not None and tail is not None:
        raise RuneError("invalid_arguments", "give head or tail, not both")
    if (head is not None or tail is not None) and (start is not None or end is not None):
        raise RuneError("invalid_arguments", "head/tail cannot be combined with start_line/end_line")
    if start is not None and end is not None and end < start:
        raise RuneError("invalid_arguments", "end_line must be >= start_line")
    return read_text(ctx, a["path"], start=start, end=end, head=head, tail=tail, max_bytes=a["max_bytes"])


def read_many(ctx: Context, a: JSON) -> JSON:
    files: list[JSON] = []
    for path in a["paths"]:
        try:
            r = read_text(ctx, path, max_bytes=a["max_bytes_per_file"])
        except RuneError as exc:
            files.append({"path": path, "error": str(exc)})
        except OSError as exc:
            files.append({"path": path, "error": f"io_error: {exc.strerror}"})
        else:
            files.append({k: r[k] for k in ("path", "content", "total_lines", "truncated")})
    return {"files": files}


# -- write_file, edit_file ------------------------------------------------------------------


def write_file(ctx: Context, a: JSON) -> JSON:
    data = a["content"].encode("utf-8")
    with ctx.sandbox.target(a["path"], write=True, create_dirs=a["create_parents"]) as t:
        shown = ctx.sandbox.display(t.loc)
        if t.name == "." or t.is_dir:
            raise RuneError("is_a_directory", f"{shown} is a directory")
        if t.st is not None and not stat.S_ISREG(t.st.st_mode):
            raise RuneError("not_a_file", f"{shown} is not a regular file")
        atomic_write(t.dirfd, t.name, data, t.st)
    return {"path": shown, "bytes_written": len(data), "created": t.st is None}


def edit_file(ctx: Context, a: JSON) -> JSON:
    with ctx.sandbox.target(a["path"], write=True, content=True) as t:  # its diff shows content
        shown = ctx.sandbox.display(t.loc)
        if t.st is None:
            raise RuneError("not_found", f"{shown} does not exist")
        if t.name == "." or t.is_dir:
            raise RuneError("is_a_directory", f"{shown} is a directory")
        fd = os.open(t.name, FILE_FLAGS, dir_fd=t.dirfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RuneError("not_a_file", f"{shown} is not a regular file")
            if st.st_size > EDIT_MAX_BYTES:
                raise RuneError("invalid_arguments", f"{shown} is larger than {EDIT_MAX_BYTES} bytes")
            data = read_all(fd)
        finally:
            os.close(fd)
        if _is_binary(data):
            raise RuneError("binary", f"{shown} is a binary file")
        try:
            before = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RuneError("binary", f"{shown} is not UTF-8 text") from exc
        after, count = _apply_edits(before, a["edits"], shown)
        applied = not a["dry_run"]
        if applied and after != before:
            atomic_write(t.dirfd, t.name, after.encode("utf-8"), st)
    return {"path": shown, "applied": applied, "replacements": count, "diff": unified_diff(before, after, shown)}


def _apply_edits(text: str, edits: list[JSON], shown: str) -> tuple[str, int]:
    count = 0
    for i, edit in enumerate(edits, 1):
        old, new, every = edit["old_text"], edit["new_text"], edit.get("replace_all", False)
        if old == "":
            raise RuneError("invalid_arguments", f"edit {i}: old_text is empty")
        found = text.count(old)
        if not found and "\r\n" in text and "\n" in old and "\r\n" not in old:
            crlf = old.replace("\n", "\r\n")  # the caller wrote LF; the file uses CRLF
            if text.count(crlf):
                old, new, found = crlf, new.replace("\r\n", "\n").replace("\n", "\r\n"), text.count(crlf)
        if not found:
            raise RuneError("no_match", f"edit {i}: old_text was not found in {shown}")
        if found > 1 and not every:
            raise RuneError(
                "ambiguous_match",
                f"edit {i}: old_text occurs {found} times in {shown}; add context to make it unique "
                "or set replace_all",
            )
        text = text.replace(old, new) if every else text.replace(old, new, 1)
        count += found if every else 1
    return text, count


# -- listing --------------------------------------------------------------------------------


def list_directory(ctx: Context, a: JSON) -> JSON:
    loc, fd = ctx.sandbox.open_dir(a["path"])
    limit = a["max_entries"]
    entries: list[JSON] = []
    try:
        with os.scandir(fd) as it:
            items = sorted(it, key=lambda e: e.name)
        if ctx.sandbox.exclusions:
            items = [e for e in items if not ctx.sandbox.exclusions.hidden(loc.child(e.name))]
        for e in items[:limit]:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            kind = kind_of(st.st_mode)
            entry: JSON = {"name": e.name, "type": kind}
            if kind == "file":
                entry["size"] = st.st_size
            elif kind == "symlink":
                entry["target"] = os.readlink(e.name, dir_fd=fd)
                if _points_into_hidden(ctx, loc, entry["target"]):
                    continue  # its target string would name the excluded path
            entries.append(entry)
    finally:
        os.close(fd)
    return {"path": ctx.sandbox.display(loc), "entries": entries, "truncated": len(items) > limit}


def _points_into_hidden(ctx: Context, where: Location, link: str) -> bool:
    sb = ctx.sandbox
    if not sb.exclusions:
        return False
    spelled = link if link.startswith("/") else os.path.join(where.root.path, *where.parts, link)
    try:
        return sb.exclusions.hidden(sb.lexical(spelled))
    except RuneError:
        return False  # outside the roots: not ours to hide, and never followed


def directory_tree(ctx: Context, a: JSON) -> JSON:
    loc, fd = ctx.sandbox.open_dir(a["path"])
    os.close(fd)
    limit = a["max_entries"]
    walker = Walker(ctx.sandbox, loc, hidden=a["hidden"], gitignore=a["gitignore"],
                    max_depth=a["max_depth"], sizes=True,
                    skip=ctx.sandbox.exclusions.hidden if ctx.sandbox.exclusions else None)
    entries: list[JSON] = []
    truncated = False
    for entry, _ in walker.walk():
        if len(entries) >= limit:
            truncated = True
            break
        item: JSON = {"path": ctx.sandbox.display(Location(loc.root, entry.parts)), "type": entry.kind,
                      "depth": entry.depth}
        if entry.size is not None:
            item["size"] = entry.size
        entries.append(item)
    return {"path": ctx.sandbox.display(loc), "entries": entries, "truncated": truncated}


# -- changing the tree ----------------------------------------------------------------------


def move(ctx: Context, a: JSON) -> JSON:
    sb = ctx.sandbox
    with sb.target(a["source"], follow=False, write=True) as src:
        if src.st is None:
            raise RuneError("not_found", f"{sb.display(src.loc)} does not exist")
        if src.name == "." or not src.loc.parts:
            raise RuneError("invalid_arguments", "cannot move a root or a path ending in '..'")
        with sb.target(a["destination"], follow=False, write=True, create_dirs=a["create_parents"]) as dst:
            if dst.name == ".":
                raise RuneError("exists", f"{sb.display(dst.loc)} already exists")
            if dst.st is not None and not a["overwrite"]:
                raise RuneError("exists", f"{sb.display(dst.loc)} already exists (set overwrite to replace it)")
            os.rename(src.name, dst.name, src_dir_fd=src.dirfd, dst_dir_fd=dst.dirfd)
    return {"source": sb.display(src.loc), "destination": sb.display(dst.loc), "replaced": dst.st is not None}


def make_directory(ctx: Context, a: JSON) -> JSON:
    with ctx.sandbox.target(a["path"], write=True, create_dirs=a["parents"]) as t:
        shown = ctx.sandbox.display(t.loc)
        if t.st is not None:
            if not t.is_dir:
                raise RuneError("exists", f"{shown} exists and is not a directory")
            return {"path": shown, "created": False}
        try:
            os.mkdir(t.name, 0o777, dir_fd=t.dirfd)
        except FileExistsError:
            return {"path": shown, "created": False}
    return {"path": shown, "created": True}


def file_info(ctx: Context, a: JSON) -> JSON:
    sb = ctx.sandbox
    with sb.target(a["path"], follow=False) as t:
        shown = sb.display(t.loc)
        if t.st is None:
            raise RuneError("not_found", f"{shown} does not exist")
        st = t.st
        kind = kind_of(st.st_mode)
        out: JSON = {
            "path": shown,
            "type": kind,
            "size": st.st_size,
            "mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "modified": _now_iso(st.st_mtime),
            "accessed": _now_iso(st.st_atime),
            "changed": _now_iso(st.st_ctime),
            "target": os.readlink(t.name, dir_fd=t.dirfd) if kind == "symlink" else None,
            "resolves_to": None,
        }
    if kind == "symlink":
        if _points_into_hidden(ctx, Location(t.loc.root, t.loc.parts[:-1]), out["target"]):
            raise RuneError("excluded", f"{a['path']!r}: it points to a path excluded from this call")
        try:
            with sb.target(a["path"]) as r:
                out["resolves_to"] = sb.display(r.loc) if r.exists else None
        except RuneError as exc:
            if exc.code == "excluded":
                raise RuneError("excluded", f"{a['path']!r}: it points to a path excluded from this call") from None
            # outside the root or dangling: say nothing about the other end
    return out


# -- specs ----------------------------------------------------------------------------------

_MAX_BYTES = integer("Cap on returned content in bytes.", minimum=1, maximum=16 * 1024 * 1024, default=READ_MAX_BYTES)
_LINE = integer(minimum=1)
_OPT_LINE = nullable(integer(minimum=1))

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="read_file",
        title="Read file",
        description=(
            "Read a UTF-8 text file, whole or in part: start_line/end_line (1-based, inclusive), "
            "or head/tail (first/last N lines). Binary files are refused. Returns the content with "
            "the line range actually returned and the file's total line count."
        ),
        input_schema=obj(
            {
                "path": PATH,
                "start_line": integer("First line to return (1-based).", minimum=1),
                "end_line": integer("Last line to return (inclusive).", minimum=1),
                "head": integer("Return only the first N lines.", minimum=1),
                "tail": integer("Return only the last N lines.", minimum=1),
                "max_bytes": _MAX_BYTES,
            },
            ["path"],
        ),
        output_schema=obj(
            {
                "path": string(),
                "content": string(),
                "start_line": _OPT_LINE,
                "end_line": _OPT_LINE,
                "total_lines": integer(minimum=0),
                "size": integer(minimum=0),
                "truncated": boolean("True when max_bytes cut the content short."),
            },
            ["path", "content", "start_line", "end_line", "total_lines", "size", "truncated"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=threaded(read_file),
    ),
    ToolSpec(
        name="read_many",
        title="Read several files",
        description="Read several text files at once. A file that cannot be read gets an error entry; the others are still returned.",
        input_schema=obj(
            {
                "paths": array(PATH, minItems=1, maxItems=100),
                "max_bytes_per_file": integer(minimum=1, maximum=4 * 1024 * 1024, default=64 * 1024),
            },
            ["paths"],
        ),
        output_schema=obj(
            {
                "files": array(
                    obj(
                        {
                            "path": string(),
                            "content": string(),
                            "total_lines": integer(minimum=0),
                            "truncated": boolean(),
                            "error": string("Set instead of content when the file could not be read."),
                        },
                        ["path"],
                        closed=False,
                    )
                )
            },
            ["files"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=threaded(read_many),
    ),
    ToolSpec(
        name="write_file",
        title="Write file",
        description=(
            "Create or replace a text file with the given UTF-8 content (atomically: a temp file "
            "renamed over the target). Missing parent directories are created unless create_parents is false."
        ),
        input_schema=obj(
            {
                "path": PATH,
                "content": string("The complete new content."),
                "create_parents": boolean(default=True),
            },
            ["path", "content"],
        ),
        output_schema=obj(
            {"path": string(), "bytes_written": integer(minimum=0), "created": boolean()},
            ["path", "bytes_written", "created"],
            closed=False,
        ),
        annotations=ToolAnnotations(read_only=False, destructive=True, idempotent=True),
        handler=threaded(write_file),
    ),
    ToolSpec(
        name="edit_file",
        title="Edit file",
        description=(
            "Apply exact text replacements to a file, in order. Each old_text must occur exactly once "
            "(or set replace_all). dry_run returns the unified diff without writing."
        ),
        input_schema=obj(
            {
                "path": PATH,
                "edits": array(
                    obj(
                        {
                            "old_text": string("Exact text to find (whitespace and newlines included).", minLength=1),
                            "new_text": string("Replacement text."),
                            "replace_all": boolean("Replace every occurrence.", default=False),
                        },
                        ["old_text", "new_text"],
                    ),
                    minItems=1,
                ),
                "dry_run": boolean("Only show the diff.", default=False),
            },
            ["path", "edits"],
        ),
        output_schema=obj(
            {
                "path": string(),
                "applied": boolean("False for a dry run."),
                "replacements": integer(minimum=0),
                "diff": string("Unified diff of the change."),
            },
            ["path", "applied", "replacements", "diff"],
            closed=False,
        ),
        annotations=ToolAnnotations(read_only=False, destructive=True, idempotent=False),
        handler=threaded(edit_file),
    ),
    ToolSpec(
        name="list_directory",
        title="List directory",
        description="List a directory's entries (hidden ones included) with type, size for files and target for symlinks.",
        input_schema=obj(
            {"path": {**PATH, "default": "."}, "max_entries": integer(minimum=1, maximum=100_000, default=1000)}
        ),
        output_schema=obj(
            {
                "path": string(),
                "entries": array(
                    obj(
                        {
                            "name": string(),
                            "type": string(enum=["file", "directory", "symlink", "other"]),
                            "size": integer(minimum=0),
                            "target": string("The symlink's target as stored."),
                        },
                        ["name", "type"],
                        closed=False,
                    )
                ),
                "truncated": boolean(),
            },
            ["path", "entries", "truncated"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=threaded(list_directory),
    ),
    ToolSpec(
        name="directory_tree",
        title="Directory tree",
        description=(
            "Recursive listing, depth-first and sorted, as a flat list of paths with their depth. "
            "Skips .git, dotfiles unless hidden is true, and .gitignore'd paths unless gitignore is "
            "false. Symlinked directories are listed, not entered."
        ),
        input_schema=obj(
            {
                "path": {**PATH, "default": "."},
                "max_depth": integer(minimum=1, maximum=64, default=3),
                "max_entries": integer(minimum=1, maximum=100_000, default=1000),
                "hidden": boolean(default=False),
                "gitignore": boolean(default=True),
            }
        ),
        output_schema=obj(
            {
                "path": string(),
                "entries": array(
                    obj(
                        {
                            "path": string(),
                            "type": string(enum=["file", "directory", "symlink", "other"]),
                            "depth": integer(minimum=1),
                            "size": integer(minimum=0),
                        },
                        ["path", "type", "depth"],
                        closed=False,
                    )
                ),
                "truncated": boolean(),
            },
            ["path", "entries", "truncated"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=threaded(directory_tree),
    ),
    ToolSpec(
        name="move",
        title="Move or rename",
        description=(
            "Move or rename a file, directory or symlink (the link itself). Refuses to replace an "
            "existing destination unless overwrite is true."
        ),
        input_schema=obj(
            {
                "source": PATH,
                "destination": PATH,
                "overwrite": boolean(default=False),
                "create_parents": boolean(default=False),
            },
            ["source", "destination"],
        ),
        output_schema=obj(
            {"source": string(), "destination": string(), "replaced": boolean()},
            ["source", "destination", "replaced"],
            closed=False,
        ),
        annotations=ToolAnnotations(read_only=False, destructive=True, idempotent=False),
        handler=threaded(move),
    ),
    ToolSpec(
        name="make_directory",
        title="Make directory",
        description="Create a directory (and its parents unless parents is false). An existing directory is not an error.",
        input_schema=obj({"path": PATH, "parents": boolean(default=True)}, ["path"]),
        output_schema=obj({"path": string(), "created": boolean()}, ["path", "created"], closed=False),
        annotations=ToolAnnotations(read_only=False, destructive=False, idempotent=True),
        handler=threaded(make_directory),
    ),
    ToolSpec(
        name="file_info",
        title="File info",
        description=(
            "Type, size, permissions and times of a path. A symlink is described itself, with its "
            "stored target and, when it stays inside the root, where it resolves to."
        ),
        input_schema=obj({"path": PATH}, ["path"]),
        output_schema=obj(
            {
                "path": string(),
                "type": string(enum=["file", "directory", "symlink", "other"]),
                "size": integer(minimum=0),
                "mode": string("Permission bits in octal, e.g. 0644."),
                "modified": string("ISO 8601, UTC."),
                "accessed": string(),
                "changed": string(),
                "target": nullable(string()),
                "resolves_to": nullable(string()),
            },
            ["path", "type", "size", "mode", "modified", "accessed", "changed", "target", "resolves_to"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=threaded(file_info),
    ),
)
