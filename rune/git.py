"""git tools through the git CLI, in a fixed environment where a repository cannot run code.

Rune finds the repository itself (walking up from the path, never above the root),
checks its worktree, git dir, common dir and object alternates all lie inside the
roots, and pins them with GIT_DIR/GIT_WORK_TREE so git discovers nothing on its own
(`core.worktree` and `.git` files pointing elsewhere are thereby ignored or refused).

Each git process gets a scrubbed environment (no system or global config, no pager,
no editor, no prompts, literal pathspecs, no lazy fetch) and config overrides that
switch off everything a hostile `.git/config` or `.gitattributes` could make git run:
hooks (`core.hooksPath=/dev/null`), fsmonitor, every filter driver the config
defines (clean/smudge/process emptied), signing, transports (`protocol.allow=never`),
auto-gc. Diff-producing commands add `--no-ext-diff --no-textconv`. User arguments are
checked: revisions may not start with "-" and are placed after `--end-of-options`;
paths go through the sandbox, must lie in the worktree and follow `--`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import re
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from rune.errors import RuneError
from rune.patch import drop_sections, drop_stat_lines
from rune.proc import finish
from rune.sandbox import Location, Sandbox
from rune.schema import JSON, array, boolean, integer, nullable, obj, string
from rune.spec import READ_ONLY, Context, ToolAnnotations, ToolSpec

OUTPUT_MAX_BYTES = 1024 * 1024
TIMEOUT_S = 120.0
MIN_VERSION = (2, 31)  # GIT_CONFIG_COUNT, --end-of-options

LFS_FILTERS: Mapping[str, Mapping[str, str]] = {
    "lfs": {
        "clean": "git-lfs clean -- %f",
        "smudge": "git-lfs smudge -- %f",
        "process": "git-lfs filter-process",
        "required": "true",
    }
}
"""Pass as `Rune(git_filters=LFS_FILTERS)` to let git add/status/diff use Git LFS."""

# Config that would otherwise let the repository run something or reach the network.
_FIXED_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.editor", ":"),
    ("core.quotePath", "false"),
    ("protocol.allow", "never"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("log.showSignature", "false"),
    ("color.ui", "false"),
    ("submodule.recurse", "false"),
    ("diff.noprefix", "false"),
    ("diff.relative", "false"),
)
_FILTER_KEYS = ("clean", "smudge", "process")


@dataclass(frozen=True)
class _Ran:
    out: bytes
    err: bytes
    code: int
    truncated: bool


@dataclass
class _State:
    """What every view of one Git shares: the version check and the cached config listings."""

    checked: bool = False
    global_identity: tuple[str | None, str | None] | None = None
    config_cache: dict[str, tuple[object, list[tuple[str, str]]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Repo:
    worktree: Location
    git_dir: str
    common_dir: str


def _inside(sandbox: Sandbox, real: str) -> bool:
    return any(real == r.real or real.startswith(r.real.rstrip("/") + "/") for r in sandbox.roots)


def check_revision(rev: str, what: str = "revision") -> str:
    """A revision may be any git rev syntax except something git could read as an option."""
    if not rev or rev.startswith("-") or len(rev) > 1024 or any(ord(c) < 0x20 or c == "\x7f" for c in rev):
        raise RuneError("invalid_arguments", f"{what} {rev!r} is not allowed (empty, starts with '-', or has control characters)")
    return rev


def _stat_key(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class Git:
    """Runs git for the sandbox's repositories. One per Rune; safe to share across tasks."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        executable: str | None = None,
        identity: tuple[str, str] | None = None,
        filters: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.executable = executable or shutil.which("git")
        self.identity = identity
        self.filters = {name: dict(keys) for name, keys in (filters or {}).items()}
        self._state = _State()

    def view(self, sandbox: Sandbox) -> Git:
        """This Git on a sandbox view (one call's exclusions); caches stay shared."""
        clone = copy.copy(self)
        clone.sandbox = sandbox
        return clone

    # -- finding the repository ------------------------------------------------------------

    def discover(self, path: str) -> tuple[Repo, Location]:
        """The repository holding `path` (within the roots) and the path's own location."""
        sb = self.sandbox
        with sb.target(path, follow=False) as t:
            loc = t.loc
            start = loc if t.is_dir else Location(loc.root, loc.parts[:-1])
        for i in range(len(start.parts), -1, -1):
            wt = Location(start.root, start.parts[:i])
            repo = self._repo_at(wt)
            if repo is not None:
                return repo, loc
        raise RuneError("not_a_repository", f"{sb.display(loc)} is not in a git repository inside the roots")

    def _repo_at(self, wt: Location) -> Repo | None:
        dot = os.path.join(wt.real, ".git")
        try:
            st = os.lstat(dot)
        except OSError:
            return None
        if os.path.realpath(wt.real) != wt.real:
            raise RuneError("outside_roots", f"{self.sandbox.display(wt)} changed while git looked at it")
        if stat.S_ISLNK(st.st_mode):  # look where a symlinked .git leads before reading anything there
            if not _inside(self.sandbox, os.path.realpath(dot)):
                raise RuneError("outside_roots", f"{self.sandbox.display(wt)}/.git points outside the roots")
            st = os.stat(dot)
        if stat.S_ISREG(st.st_mode):
            with open(dot, encoding="utf-8", errors="replace") as f:
                line = f.readline().strip()
            if not line.startswith("gitdir:"):
                return None
            git_dir = os.path.realpath(os.path.join(wt.real, line.removeprefix("gitdir:").strip()))
        else:
            git_dir = os.path.realpath(dot)
        if not _inside(self.sandbox, git_dir):
            raise RuneError("outside_roots", f"the git directory of {self.sandbox.display(wt)} is outside the roots")
        if not os.path.isfile(os.path.join(git_dir, "HEAD")):
            return None
        common = git_dir
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(git_dir, "commondir"), encoding="utf-8", errors="replace") as f:
                common = os.path.realpath(os.path.join(git_dir, f.read().strip()))
        if not _inside(self.sandbox, common):
            raise RuneError("outside_roots", f"the git common directory of {self.sandbox.display(wt)} is outside the roots")
        self._check_alternates(os.path.join(common, "objects"), 0)
        return Repo(wt, git_dir, common)

    def _check_alternates(self, objects: str, depth: int) -> None:
        """Object stores borrowed through objects/info/alternates must be inside the roots too."""
        try:
            with open(os.path.join(objects, "info", "alternates"), encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f]
        except FileNotFoundError:
            return
        for line in lines:
            if not line or line.startswith("#"):
                continue
            alt = os.path.realpath(os.path.join(objects, line.strip('"')))
            if line.startswith('"') or not _inside(self.sandbox, alt) or depth >= 5:
                raise RuneError("outside_roots", "the repository borrows objects from outside the roots (alternates)")
            self._check_alternates(alt, depth + 1)

    def repo_path(self, repo: Repo, loc: Location) -> str:
        """A location as a path relative to the worktree, for after `--`."""
        if not repo.worktree.contains(loc):
            raise RuneError("outside_roots", f"{self.sandbox.display(loc)} is outside the repository {self.sandbox.display(repo.worktree)}")
        return "/".join(loc.parts[len(repo.worktree.parts):]) or "."

    def display(self, repo: Repo, rel: str) -> str:
        return self.sandbox.display(Location(repo.worktree.root, (*repo.worktree.parts, *rel.split("/"))))

    # -- running git ------------------------------------------------------------------------

    async def _check_git(self) -> str:
        if self.executable is None:
            raise RuneError("unavailable", "git is not installed")
        if not self._state.checked:
            ran = await self._spawn(["version"], {"PATH": os.environ.get("PATH", os.defpath)}, "/", None, None)
            m = re.search(rb"(\d+)\.(\d+)", ran.out)
            if not m or (int(m[1]), int(m[2])) < MIN_VERSION:
                raise RuneError("unavailable", f"git {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer is needed")
            self._state.checked = True
        return self.executable

    async def _repo_config(self, repo: Repo) -> list[tuple[str, str]]:
        """Overrides that depend on the repository's config: its filter drivers, an identity."""
        key = (_stat_key(os.path.join(repo.common_dir, "config")), _stat_key(os.path.join(repo.git_dir, "config.worktree")))
        cached = self._state.config_cache.get(repo.git_dir)
        if cached is not None and cached[0] == key:
            return cached[1]
        ran = await self._spawn(
            ["config", "--list", "--name-only", "-z"], self._env(repo, []), repo.worktree.real, None, None
        )
        if ran.code != 0:
            raise RuneError("git_error", ran.err.decode("utf-8", "replace").strip() or "git config failed")
        names = [n.decode("utf-8", "surrogateescape") for n in ran.out.split(b"\0") if n]
        drivers = sorted({
            n[len("filter."):].rpartition(".")[0]
            for n in names
            if n.startswith("filter.") and n.rpartition(".")[2] in (*_FILTER_KEYS, "required")
        })
        extra: list[tuple[str, str]] = []
        for driver in drivers:
            if driver not in self.filters:
                extra += [(f"filter.{driver}.{k}", "") for k in _FILTER_KEYS]
                extra.append((f"filter.{driver}.required", "false"))
        lower = {n.lower() for n in names}
        name, email = self.identity or await self._identity_from_global()
        if "user.name" not in lower and name:
            extra.append(("user.name", name))
        if "user.email" not in lower and email:
            extra.append(("user.email", email))
        if not any(n.startswith(("include.", "includeif.")) for n in lower):
            self._state.config_cache[repo.git_dir] = (key, extra)  # includes can change unseen: never cache them
        return extra

    async def _identity_from_global(self) -> tuple[str | None, str | None]:
        """The user's name and email from their global config: commits need an author, and the
        global config is otherwise never read."""
        if self._state.global_identity is None:
            env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/"),
                   "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
            values: list[str | None] = []
            for key in ("user.name", "user.email"):
                ran = await self._spawn(["config", "--global", "--includes", "--get", key], env, "/", None, None)
                values.append((ran.out.decode("utf-8", "replace").strip() or None) if ran.code == 0 else None)
            self._state.global_identity = (values[0], values[1])
        return self._state.global_identity

    def _env(self, repo: Repo, extra: Sequence[tuple[str, str]]) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME", "/"),
            "LC_ALL": "C",
            "GIT_DIR": repo.git_dir,
            "GIT_WORK_TREE": repo.worktree.real,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_SYSTEM": os.devnull,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PAGER": "cat",
            "PAGER": "cat",
            "GIT_EDITOR": ":",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_NO_LAZY_FETCH": "1",
            # Pathspec magic is on so exclusions can be ":(exclude,glob)"; every pathspec a caller
            # supplies is passed as ":(literal)path" (literal_pathspec), so callers get no magic.
            "GIT_LITERAL_PATHSPECS": "0",
        }
        config = [*_FIXED_CONFIG, *((f"filter.{n}.{k}", v) for n, keys in self.filters.items() for k, v in keys.items()), *extra]
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    async def _spawn(
        self, args: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes | None, max_bytes: int | None
    ) -> _Ran:
        assert self.executable is not None
        proc = await asyncio.create_subprocess_exec(
            self.executable, "--no-pager", *args, cwd=cwd, env=dict(env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(proc.stderr.read())
        chunks: list[bytes] = []
        got = 0
        truncated = done = False
        try:
            async with asyncio.timeout(TIMEOUT_S):
                if stdin is not None:
                    assert proc.stdin is not None
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                    proc.stdin.close()
                while chunk := await proc.stdout.read(1 << 16):
                    chunks.append(chunk)
                    got += len(chunk)
                    if max_bytes is not None and got > max_bytes:
                        truncated = True
                        break
                done = not truncated
                code = await finish(proc, kill=truncated)
                err = await errors
        except TimeoutError:
            raise RuneError("git_error", f"git {args[0]} took longer than {TIMEOUT_S:.0f} s") from None
        finally:
            if not done and proc.returncode is None:
                await finish(proc, kill=True)
            if not errors.done():
                errors.cancel()
        out = b"".join(chunks)
        if truncated and max_bytes is not None:
            return _Ran(out[:max_bytes], b"", 0, True)
        return _Ran(out, err, code, False)

    async def run(
        self, repo: Repo, args: Sequence[str], *, stdin: bytes | None = None, max_bytes: int | None = None,
        check: bool = True,
    ) -> tuple[bytes, bool, int]:
        """git `args` in `repo`: (stdout, truncated, exit code). Raises git_error on failure."""
        await self._check_git()
        env = self._env(repo, await self._repo_config(repo))
        ran = await self._spawn(args, env, repo.worktree.real, stdin, max_bytes)
        if check and ran.code != 0:
            message = (ran.err or ran.out).decode("utf-8", "replace").strip() or f"git {args[0]} exited with {ran.code}"
            raise RuneError("git_error", message)
        return ran.out, ran.truncated, ran.code


# -- tool helpers ---------------------------------------------------------------------------


async def _discover(ctx: Context, path: str) -> tuple[Repo, Location]:
    return await asyncio.to_thread(ctx.git.discover, path)


def _paths(ctx: Context, repo: Repo, paths: Sequence[str], *, content: bool = False) -> list[str]:
    out: list[str] = []
    for p in paths:
        with ctx.sandbox.target(p, follow=False, content=content) as t:
            out.append(ctx.git.repo_path(repo, t.loc))
    return out


def literal_pathspec(rel: str) -> str:
    """A caller's path as a pathspec git takes literally, whatever its characters."""
    return ":(literal)" + rel


def _pathspecs(ctx: Context, repo: Repo, rels: Sequence[str], *, content: bool) -> list[str]:
    """The caller's paths (literal) and the call's exclusions, for after `--`."""
    specs = [literal_pathspec(r) for r in rels]
    if ctx.sandbox.exclusions:
        specs += ctx.sandbox.exclusions.pathspecs(repo.worktree, content=content)
    return specs


def _repo_loc(repo: Repo, rel: str) -> Location:
    return Location(repo.worktree.root, (*repo.worktree.parts, *(p for p in rel.split("/") if p)))


def _excluded_name(ctx: Context, repo: Repo, *, content: bool) -> Callable[[str], bool] | None:
    """A test for worktree-relative paths git printed: does the call exclude this one?"""
    ex = ctx.sandbox.exclusions
    if not ex:
        return None
    test = ex.withheld if content else ex.hidden
    return lambda rel: test(_repo_loc(repo, rel))


def _iso(epoch: str, tz: str) -> str:
    sign = -1 if tz.startswith("-") else 1
    digits = tz.lstrip("+-").rjust(4, "0")
    offset = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return datetime.fromtimestamp(int(epoch), UTC).astimezone(offset).isoformat()


# -- the tools ------------------------------------------------------------------------------


async def git_status(ctx: Context, a: JSON) -> JSON:
    repo, loc = await _discover(ctx, a["path"])
    rel = ctx.git.repo_path(repo, loc)
    args = ["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal", "--ignore-submodules=all", "--"]
    out, _, _ = await ctx.git.run(repo, [*args, *_pathspecs(ctx, repo, [rel], content=False)])
    excluded = _excluded_name(ctx, repo, content=False)
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    result: JSON = {"repo": ctx.sandbox.display(repo.worktree), "branch": None, "head": None, "upstream": None,
                    "ahead": None, "behind": None, "entries": []}
    i = 0
    while i < len(fields):
        f = fields[i]
        i += 1
        if not f:
            continue
        if f.startswith("# "):
            key, _, value = f[2:].partition(" ")
            if key == "branch.oid":
                result["head"] = None if value == "(initial)" else value
            elif key == "branch.head":
                result["branch"] = None if value == "(detached)" else value
            elif key == "branch.upstream":
                result["upstream"] = value
            elif key == "branch.ab":
                ahead, behind = value.split(" ")
                result["ahead"], result["behind"] = int(ahead), -int(behind)
            continue
        kind = f[0]
        entry: JSON
        if kind in "12u":
            parts = f.split(" ", {"1": 8, "2": 9, "u": 10}[kind])
            xy, path = parts[1], parts[-1]
            entry = {"path": ctx.git.display(repo, path), "index": xy[0], "worktree": xy[1],
                     "kind": {"1": "changed", "2": "renamed", "u": "unmerged"}[kind]}
            if kind == "2":
                entry["orig_path"] = ctx.git.display(repo, fields[i])
                i += 1
        else:
            entry = {"path": ctx.git.display(repo, f[2:]), "index": kind, "worktree": kind,
                     "kind": "untracked" if kind == "?" else "ignored"}
            path = f[2:]
        if excluded is not None and (excluded(path) or (kind == "2" and excluded(fields[i - 1]))):
            continue  # git's pathspec left it out already; this holds if git's globbing differs
        result["entries"].append(entry)
    result["clean"] = not result["entries"]
    return result


def _parse_numstat(data: bytes) -> tuple[list[JSON], bytes]:
    """Split `--numstat -z --patch` output into per-file counts and the patch text."""
    files: list[JSON] = []
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0" and not data.startswith(b"diff ", pos):
        end = data.find(b"\0", pos)
        if end < 0:
            break
        added, deleted, path = data[pos:end].decode("utf-8", "surrogateescape").split("\t", 2)
        pos = end + 1
        item: JSON = {"added": None if added == "-" else int(added), "deleted": None if deleted == "-" else int(deleted)}
        if path == "":  # a rename: old and new paths follow
            old_end = data.find(b"\0", pos)
            new_end = data.find(b"\0", old_end + 1)
            if old_end < 0 or new_end < 0:
                break
            item["old_path"] = data[pos:old_end].decode("utf-8", "surrogateescape")
            path = data[old_end + 1:new_end].decode("utf-8", "surrogateescape")
            pos = new_end + 1
        item["path"] = path
        item["binary"] = added == "-"
        files.append(item)
    if data[pos:pos + 1] == b"\0":
        pos += 1
    return files, data[pos:]


async def git_diff(ctx: Context, a: JSON) -> JSON:
    repo, _ = await _discover(ctx, a["path"])
    args = ["diff", "--no-ext-diff", "--no-textconv", "--no-color", "--src-prefix=a/", "--dst-prefix=b/",
            f"--unified={a['context_lines']}", "--numstat", "--patch", "-z", "--ignore-submodules=all"]
    if a["staged"]:
        args.append("--cached")
    args.append("--end-of-options")
    if a.get("revision"):
        args.append(check_revision(a["revision"]))
        if ctx.sandbox.exclusions:
            await _only_commits(ctx, repo, a["revision"])
    rels = await asyncio.to_thread(_paths, ctx, repo, a["paths"], content=True)
    args += ["--", *_pathspecs(ctx, repo, rels, content=True)]
    out, truncated, _ = await ctx.git.run(repo, args, max_bytes=a["max_bytes"])
    files, patch = _parse_numstat(out)
    excluded = _excluded_name(ctx, repo, content=True)
    if excluded is not None:
        files = [f for f in files if not (excluded(f["path"]) or ("old_path" in f and excluded(f["old_path"])))]
        patch = drop_sections(patch.decode("utf-8", "surrogateescape"), excluded).encode("utf-8", "surrogateescape")
    for f in files:
        f["path"] = ctx.git.display(repo, f["path"])
        if "old_path" in f:
            f["old_path"] = ctx.git.display(repo, f["old_path"])
    return {"repo": ctx.sandbox.display(repo.worktree), "files": files,
            "diff": patch.decode("utf-8", "replace"), "truncated": truncated}


def range_ends(rev: str) -> list[str]:
    """The revisions of ``A..B`` / ``A...B`` (an empty end means HEAD), or ``[rev]``."""
    depth = 0
    for i, c in enumerate(rev):
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        elif c == "." and not depth and rev.startswith("..", i):
            width = 3 if rev.startswith("...", i) else 2
            return [end or "HEAD" for end in (rev[:i], rev[i + width:])]
    return [rev]


async def _only_commits(ctx: Context, repo: Repo, rev: str) -> None:
    """With exclusions in force a diff compares commits: a tree (``HEAD:secrets``) or a blob as
    one end would show an excluded file under a name relative to that tree, past the pathspecs."""
    for end in range_ends(rev):
        if await _rev_parse(ctx, repo, f"{end}^{{commit}}") is None:
            raise RuneError("invalid_arguments", f"{end!r} is not a commit: with exclusions in force, git_diff "
                            "compares commits (limit it to files with paths)")


_LOG_FIELDS = ("hash", "parents", "author", "email", "date", "committer", "committed", "subject", "body")
_LOG_FORMAT = "%x1f".join(("%H", "%P", "%an", "%ae", "%aI", "%cn", "%cI", "%s", "%b"))


async def git_log(ctx: Context, a: JSON) -> JSON:
    repo, _ = await _discover(ctx, a["path"])
    args = ["log", "-z", f"--format={_LOG_FORMAT}", f"--max-count={a['max_count']}", f"--skip={a['skip']}",
            "--end-of-options"]
    if a.get("revision"):
        args.append(check_revision(a["revision"]))
    rels = await asyncio.to_thread(_paths, ctx, repo, a["paths"])
    args += ["--", *(literal_pathspec(r) for r in rels)]
    out, _, code = await ctx.git.run(repo, args, check=False)
    if code != 0:
        head, _, _ = await ctx.git.run(repo, ["rev-parse", "--verify", "-q", "HEAD"], check=False)
        if not head and not a.get("revision"):
            return {"repo": ctx.sandbox.display(repo.worktree), "commits": []}  # no commits yet
        await ctx.git.run(repo, args)  # raises with git's message
    commits: list[JSON] = []
    for record in out.decode("utf-8", "replace").split("\0"):
        if not record.strip():
            continue
        values = record.lstrip("\n").split("\x1f")
        c: JSON = dict(zip(_LOG_FIELDS, values, strict=False))
        c["parents"] = c.get("parents", "").split()
        c["body"] = c.get("body", "").strip()
        commits.append(c)
    return {"repo": ctx.sandbox.display(repo.worktree), "commits": commits}


_SHOW = ("show", "--no-ext-diff", "--no-textconv", "--no-color", "--src-prefix=a/", "--dst-prefix=b/",
         "--format=fuller")


async def git_show(ctx: Context, a: JSON) -> JSON:
    repo, _ = await _discover(ctx, a["path"])
    rev = check_revision(a["revision"])
    if ctx.sandbox.exclusions:
        out, truncated = await _show_excluding(ctx, repo, rev, a)
    else:
        args = [*_SHOW, *(["--stat"] if a["stat"] else [])]
        out, truncated, _ = await ctx.git.run(repo, [*args, "--end-of-options", rev, "--"], max_bytes=a["max_bytes"])
    return {"repo": ctx.sandbox.display(repo.worktree), "revision": rev,
            "output": out.decode("utf-8", "replace"), "truncated": truncated}


def split_rev_path(rev: str) -> tuple[str, str] | None:
    """``REV:path``, ``:path`` or ``:N:path`` as (tree-ish, path), the way git splits it; else None.

    Like git, the first ":" outside ``{...}`` separates them (``HEAD@{1 hour ago}:a``,
    ``HEAD^{/fix: it}`` has none); ``:/text`` searches commit messages and names no path.
    """
    if rev.startswith(":"):
        if rev.startswith(":/"):
            return None
        if len(rev) >= 3 and rev[1] in "0123" and rev[2] == ":":
            return rev[:2], rev[3:]
        return "", rev[1:]
    depth = 0
    for i, c in enumerate(rev):
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        elif c == ":" and not depth:
            return rev[:i], rev[i + 1:]
    return None


def _tree_path(path: str) -> str | None:
    """The path from the tree's top that git reads ``path`` as (cwd is the top); None if unsure."""
    comps = [c for c in path.split("/") if c]
    if path.startswith(("./", "../")) or path in (".", ".."):
        out: list[str] = []
        for c in comps:
            if c == "..":
                if not out:
                    return None
                out.pop()
            elif c != ".":
                out.append(c)
        return "/".join(out)
    if any(c in (".", "..") for c in comps):
        return None
    return "/".join(comps)


async def _rev_parse(ctx: Context, repo: Repo, rev: str) -> str | None:
    out, _, code = await ctx.git.run(repo, ["rev-parse", "--verify", "--quiet", "--end-of-options", rev], check=False)
    return out.decode().strip() if code == 0 else None


async def _show_excluding(ctx: Context, repo: Repo, rev: str, a: JSON) -> tuple[bytes, bool]:
    """git show with the call's exclusions: what is shown is the object that was checked.

    A file or directory must be named as ``REV:path`` so its path can be checked (an excluded
    blob is refused; a tree is listed without its excluded entries); a commit's patch or stat
    leaves excluded files out. The revision is resolved once and the object id is shown, so a
    ref moved in between cannot swap in something unchecked.
    """
    ex = ctx.sandbox.exclusions
    oid = await _rev_parse(ctx, repo, rev)
    if oid is None:
        await ctx.git.run(repo, ["rev-parse", "--verify", "--end-of-options", rev])  # raises git's message
        raise RuneError("git_error", f"unknown revision {rev!r}")
    typed, _, _ = await ctx.git.run(repo, ["cat-file", "-t", oid])
    kind = typed.decode().strip()
    named = split_rev_path(rev)
    if named is not None:
        treeish, path = named
        canonical = _tree_path(path)
        if canonical is None or await _rev_parse(ctx, repo, f"{treeish}:{canonical}") != oid:
            raise RuneError("invalid_arguments", f"cannot tell which path {rev!r} names; use REV:dir/file")
        loc = _repo_loc(repo, canonical)
        if kind == "tree":
            ctx.sandbox.check_excluded(rev, loc, content=False)
            return await _show_tree(ctx, repo, rev, oid, loc, a["max_bytes"])
        ctx.sandbox.check_excluded(rev, loc, content=True)
    elif kind == "tag":
        peeled, _, _ = await ctx.git.run(repo, ["cat-file", "-t", f"{oid}^{{}}"])
        kind = peeled.decode().strip()
    if named is None and kind in ("blob", "tree"):
        raise RuneError("invalid_arguments", f"{rev!r} is a {kind}: with exclusions in force, name a file or "
                        "directory as REV:path (e.g. HEAD:src/app.py) so its path can be checked")
    args = [*_SHOW, *(["--stat=4096,4096"] if a["stat"] else [])]
    specs = ex.pathspecs(repo.worktree, content=True) if kind in ("commit", "tag") else []
    out, truncated, _ = await ctx.git.run(repo, [*args, "--end-of-options", oid, "--", *specs], max_bytes=a["max_bytes"])
    excluded = _excluded_name(ctx, repo, content=True)
    if excluded is not None and kind in ("commit", "tag"):
        text = drop_sections(out.decode("utf-8", "surrogateescape"), excluded)
        out = drop_stat_lines(text, excluded).encode("utf-8", "surrogateescape")
    return out, truncated


async def _show_tree(ctx: Context, repo: Repo, rev: str, oid: str, loc: Location, max_bytes: int
                     ) -> tuple[bytes, bool]:
    """What ``git show <tree>`` prints (``tree REV``, a blank line, one name per line, "/" after
    directories), without the excluded entries."""
    out, _, _ = await ctx.git.run(repo, ["ls-tree", "-z", "--end-of-options", oid])
    lines = [f"tree {rev}", ""]
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, raw = record.partition(b"\t")
        name = raw.decode("utf-8", "surrogateescape")
        if ctx.sandbox.exclusions.hidden(loc.child(name)):
            continue
        lines.append(name + ("/" if meta.split(b" ")[1:2] == [b"tree"] else ""))
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    return data[:max_bytes], len(data) > max_bytes


async def git_blame(ctx: Context, a: JSON) -> JSON:
    repo, loc = await _discover(ctx, a["path"])
    if ctx.sandbox.exclusions:
        ctx.sandbox.check_excluded(a["path"], loc, content=True)  # blame shows every line
    rel = ctx.git.repo_path(repo, loc)
    args = ["blame", "--porcelain", "--no-textconv"]
    start, end = a.get("start_line"), a.get("end_line")
    if start is not None or end is not None:
        if start is not None and end is not None and end < start:
            raise RuneError("invalid_arguments", "end_line must be >= start_line")
        args += ["-L", f"{start or 1},{end or ''}"]
    if a.get("revision"):
        args.append(check_revision(a["revision"]))  # blame has no --end-of-options in older git
    out, _, _ = await ctx.git.run(repo, [*args, "--", rel])
    lines = _parse_blame(out.decode("utf-8", "replace"))
    return {"repo": ctx.sandbox.display(repo.worktree), "path": ctx.sandbox.display(loc), "lines": lines}


_BLAME_HEADER = re.compile(r"[0-9a-f]{40,64} \d+ \d+")


def _parse_blame(text: str) -> list[JSON]:
    """`git blame --porcelain`: a commit's details come once, before its first line."""
    details: dict[str, dict[str, str]] = {}
    per_commit: dict[str, JSON] = {}
    lines: list[JSON] = []
    sha, final = "", 0
    info: dict[str, str] = {}
    for raw in text.split("\n"):
        if raw.startswith("\t"):
            fields = per_commit.get(sha)
            if fields is None:
                fields = per_commit[sha] = {
                    "commit": sha,
                    "author": info.get("author", ""),
                    "email": info.get("author-mail", "").strip("<>"),
                    "date": _iso(info.get("author-time", "0"), info.get("author-tz", "+0000")),
                    "summary": info.get("summary", ""),
                }
            lines.append({"line": final, **fields, "text": raw[1:]})
        elif _BLAME_HEADER.match(raw):
            sha, _, rest = raw.partition(" ")
            final = int(rest.split(" ", 2)[1])
            info = details.setdefault(sha, {})
        elif raw:
            key, _, value = raw.partition(" ")
            info[key] = value
    return lines


async def git_branches(ctx: Context, a: JSON) -> JSON:
    repo, _ = await _discover(ctx, a["path"])
    fmt = "%(refname)%00%(objectname)%00%(upstream:short)%00%(HEAD)%00%(contents:subject)"
    refs = ["refs/heads", *(["refs/remotes"] if a["remotes"] else [])]
    out, _, _ = await ctx.git.run(repo, ["for-each-ref", f"--format={fmt}", *refs])
    branches: list[JSON] = []
    current = None
    for line in out.decode("utf-8", "replace").splitlines():
        ref, sha, upstream, head, subject = (line.split("\0") + [""] * 5)[:5]
        remote = ref.startswith("refs/remotes/")
        name = ref.removeprefix("refs/remotes/" if remote else "refs/heads/")
        if head == "*":
            current = name
        branches.append({"name": name, "commit": sha, "upstream": upstream or None, "current": head == "*",
                         "remote": remote, "subject": subject})
    return {"repo": ctx.sandbox.display(repo.worktree), "current": current, "branches": branches}


async def git_add(ctx: Context, a: JSON) -> JSON:
    repo, _ = await _discover(ctx, a["paths"][0])
    rels = await asyncio.to_thread(_paths, ctx, repo, a["paths"])
    await ctx.git.run(repo, ["add", "--", *_pathspecs(ctx, repo, rels, content=False)])
    return {"repo": ctx.sandbox.display(repo.worktree), "paths": [ctx.git.display(repo, r) for r in rels]}


async def git_commit(ctx: Context, a: JSON) -> JSON:
    repo, _ = await _discover(ctx, a["path"])
    if not a["message"].strip():
        raise RuneError("invalid_arguments", "the commit message is empty")
    args = ["commit", "--no-verify", "--no-gpg-sign", "--cleanup=strip", "--file=-"]
    if a["allow_empty"]:
        args.append("--allow-empty")
    await ctx.git.run(repo, args, stdin=a["message"].encode("utf-8"))
    out, _, _ = await ctx.git.run(repo, ["rev-parse", "HEAD", "--abbrev-ref", "HEAD"])
    sha, branch = [*out.decode().split(), "", ""][:2]
    return {"repo": ctx.sandbox.display(repo.worktree), "commit": sha,
            "branch": None if branch == "HEAD" else branch, "summary": a["message"].strip().splitlines()[0]}


# -- specs ----------------------------------------------------------------------------------

_REPO_PATH = string("A path inside the repository (selects the repository); default the first root.", default=".")
_REVISION = string("A revision: commit, branch, tag, HEAD~2, A..B. Must not start with '-'.", minLength=1)
_PATHS = array(string(minLength=1), "Limit to these paths (inside the repository).", default=[])
_MAX_OUT = integer("Cap on the returned text in bytes.", minimum=1, maximum=16 * 1024 * 1024, default=OUTPUT_MAX_BYTES)
_REPO = string("The repository's worktree.")
_WRITE = ToolAnnotations(read_only=False, destructive=False, idempotent=True)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="git_status",
        title="Git status",
        description="Branch, upstream, ahead/behind and changed, untracked and unmerged paths (limited to `path` when it is not the repository root).",
        input_schema=obj({"path": _REPO_PATH}),
        output_schema=obj(
            {
                "repo": _REPO,
                "branch": nullable(string("null when HEAD is detached.")),
                "head": nullable(string("Commit HEAD points at; null before the first commit.")),
                "upstream": nullable(string()),
                "ahead": nullable(integer(minimum=0)),
                "behind": nullable(integer(minimum=0)),
                "clean": boolean(),
                "entries": array(
                    obj(
                        {
                            "path": string(),
                            "index": string("Staged state: . M A D R C U ? !"),
                            "worktree": string("Unstaged state, same letters."),
                            "kind": string(enum=["changed", "renamed", "unmerged", "untracked", "ignored"]),
                            "orig_path": string(),
                        },
                        ["path", "index", "worktree", "kind"],
                        closed=False,
                    )
                ),
            },
            ["repo", "branch", "head", "upstream", "ahead", "behind", "clean", "entries"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=git_status,
    ),
    ToolSpec(
        name="git_diff",
        title="Git diff",
        description=(
            "Unified diff with per-file line counts: unstaged changes (default), staged changes "
            "(staged), or the worktree/index against a revision (revision, e.g. HEAD~1 or main..feature)."
        ),
        input_schema=obj(
            {
                "path": _REPO_PATH,
                "staged": boolean("Diff the index instead of the worktree.", default=False),
                "revision": _REVISION,
                "paths": _PATHS,
                "context_lines": integer(minimum=0, maximum=1000, default=3),
                "max_bytes": _MAX_OUT,
            }
        ),
        output_schema=obj(
            {
                "repo": _REPO,
                "files": array(
                    obj(
                        {
                            "path": string(),
                            "old_path": string(),
                            "added": nullable(integer(minimum=0)),
                            "deleted": nullable(integer(minimum=0)),
                            "binary": boolean(),
                        },
                        ["path", "added", "deleted", "binary"],
                        closed=False,
                    )
                ),
                "diff": string(),
                "truncated": boolean(),
            },
            ["repo", "files", "diff", "truncated"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=git_diff,
    ),
    ToolSpec(
        name="git_log",
        title="Git log",
        description="Commits, newest first, from HEAD or a revision/range, optionally only those touching paths.",
        input_schema=obj(
            {
                "path": _REPO_PATH,
                "revision": _REVISION,
                "paths": _PATHS,
                "max_count": integer(minimum=1, maximum=10_000, default=20),
                "skip": integer(minimum=0, default=0),
            }
        ),
        output_schema=obj(
            {
                "repo": _REPO,
                "commits": array(
                    obj(
                        {
                            "hash": string(),
                            "parents": array(string()),
                            "author": string(),
                            "email": string(),
                            "date": string("Author date, ISO 8601."),
                            "committer": string(),
                            "committed": string(),
                            "subject": string(),
                            "body": string(),
                        },
                        ["hash", "parents", "author", "email", "date", "subject", "body"],
                        closed=False,
                    )
                ),
            },
            ["repo", "commits"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=git_log,
    ),
    ToolSpec(
        name="git_show",
        title="Git show",
        description="Show a commit (header and patch, or stat), or a file at a revision with REV:path.",
        input_schema=obj(
            {
                "revision": {**_REVISION, "default": "HEAD"},
                "path": _REPO_PATH,
                "stat": boolean("Summary of changed files instead of the patch.", default=False),
                "max_bytes": _MAX_OUT,
            }
        ),
        output_schema=obj(
            {"repo": _REPO, "revision": string(), "output": string(), "truncated": boolean()},
            ["repo", "revision", "output", "truncated"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=git_show,
    ),
    ToolSpec(
        name="git_blame",
        title="Git blame",
        description="Who last changed each line of a file (optionally a line range, or as of a revision).",
        input_schema=obj(
            {
                "path": string("The file.", minLength=1),
                "start_line": integer(minimum=1),
                "end_line": integer(minimum=1),
                "revision": _REVISION,
            },
            ["path"],
        ),
        output_schema=obj(
            {
                "repo": _REPO,
                "path": string(),
                "lines": array(
                    obj(
                        {
                            "line": integer(minimum=1),
                            "commit": string(),
                            "author": string(),
                            "email": string(),
                            "date": string(),
                            "summary": string(),
                            "text": string(),
                        },
                        ["line", "commit", "author", "email", "date", "summary", "text"],
                        closed=False,
                    )
                ),
            },
            ["repo", "path", "lines"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=git_blame,
    ),
    ToolSpec(
        name="git_branches",
        title="Git branches",
        description="Local branches (and remote-tracking ones with remotes) with their commit, upstream and which is current.",
        input_schema=obj({"path": _REPO_PATH, "remotes": boolean(default=False)}),
        output_schema=obj(
            {
                "repo": _REPO,
                "current": nullable(string()),
                "branches": array(
                    obj(
                        {
                            "name": string(),
                            "commit": string(),
                            "upstream": nullable(string()),
                            "current": boolean(),
                            "remote": boolean(),
                            "subject": string(),
                        },
                        ["name", "commit", "upstream", "current", "remote", "subject"],
                        closed=False,
                    )
                ),
            },
            ["repo", "current", "branches"],
            closed=False,
        ),
        annotations=READ_ONLY,
        handler=git_branches,
    ),
    ToolSpec(
        name="git_add",
        title="Git add",
        description="Stage paths (new, changed or deleted files, or directories) in their repository.",
        input_schema=obj({"paths": array(string(minLength=1), minItems=1, maxItems=10_000)}, ["paths"]),
        output_schema=obj({"repo": _REPO, "paths": array(string())}, ["repo", "paths"], closed=False),
        annotations=_WRITE,
        handler=git_add,
    ),
    ToolSpec(
        name="git_commit",
        title="Git commit",
        description="Commit what is staged, with the given message. Hooks and signing are never run.",
        input_schema=obj(
            {
                "message": string(minLength=1),
                "path": _REPO_PATH,
                "allow_empty": boolean(default=False),
            },
            ["message"],
        ),
        output_schema=obj(
            {"repo": _REPO, "commit": string(), "branch": nullable(string()), "summary": string()},
            ["repo", "commit", "branch", "summary"],
            closed=False,
        ),
        annotations=ToolAnnotations(read_only=False, destructive=False, idempotent=False),
        handler=git_commit,
    ),
)
