"""Rune fixtures: a root with an outside world next to it, git repos, a Rune per grep engine."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rune import Rune
from rune.grep import find_ripgrep

RG = find_ripgrep()
ENGINES = [pytest.param("ripgrep", marks=pytest.mark.skipif(RG is None, reason="no rg binary")), "python"]


@dataclass
class World:
    """tmp/root is the root; tmp/root_evil, tmp/secret.txt and tmp/outside are what must stay unreachable."""

    tmp: Path
    root: Path
    evil: Path
    secret: Path
    outside: Path

    def untouched(self) -> None:
        assert self.secret.read_text() == "SECRET\n"
        assert sorted(p.name for p in self.outside.iterdir()) == ["secret.txt"]
        assert sorted(p.name for p in self.evil.iterdir()) == ["secret.txt"]
        assert sorted(p.name for p in self.tmp.iterdir()) == ["outside", "root", "root_evil", "secret.txt"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    tmp = tmp_path
    root, evil, outside = tmp / "root", tmp / "root_evil", tmp / "outside"
    for d in (root, evil, outside, root / "sub"):
        d.mkdir()
    secret = tmp / "secret.txt"
    for f in (secret, evil / "secret.txt", outside / "secret.txt"):
        f.write_text("SECRET\n")
    (root / "inside.txt").write_text("inside\n")
    (root / "sub" / "file.txt").write_text("one\ntwo\nthree\n")
    os.symlink("inside.txt", root / "link_in")
    os.symlink(root / "inside.txt", root / "link_in_abs")
    os.symlink("sub", root / "dir_in")
    os.symlink("../secret.txt", root / "link_out")
    os.symlink(secret, root / "link_out_abs")
    os.symlink("../outside", root / "dir_out")
    os.symlink(outside, root / "dir_out_abs")
    os.symlink("../nowhere.txt", root / "dangling_out")
    os.symlink("missing.txt", root / "dangling_in")
    os.symlink("loop", root / "loop")
    os.symlink("sub/../../secret.txt", root / "link_dotdot")
    return World(tmp, root, evil, secret, outside)


@pytest.fixture
async def rune(world: World) -> AsyncIterator[Rune]:
    async with Rune([world.root], git_identity=("Rune Test", "rune@example.com")) as r:
        yield r


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Plain git for building fixtures (not through Rune)."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(k, None)
    out = subprocess.run(
        ["git", "-c", "user.name=Fixture", "-c", "user.email=fixture@example.com", "-c", "init.defaultBranch=main",
         "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"git {args}: {out.stderr}")
    return out.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A repo with two commits on main and a feature branch."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.name", "Fixture")
    git(r, "config", "user.email", "fixture@example.com")
    (r / "a.txt").write_text("alpha\nbeta\n")
    (r / "src").mkdir()
    (r / "src" / "m.py").write_text("def f():\n    return 1\n")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "first")
    (r / "a.txt").write_text("alpha\nbeta\ngamma\n")
    git(r, "commit", "-q", "-am", "second\n\nwith a body")
    git(r, "branch", "feature")
    yield r
