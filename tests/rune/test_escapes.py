"""Every known way out of the root, for every tool that takes a path: each must be refused.

Paths use {root} and {tmp} placeholders; tmp/root is the root, tmp/root_evil, tmp/secret.txt
and tmp/outside are outside it. After each attempt nothing outside may have changed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from rune import Rune, RuneError
from rune import sandbox as sandbox_mod
from tests.rune.conftest import ENGINES, RG, World

OUT = "outside_roots"

ESCAPES: list[tuple[str, str, dict[str, Any], str]] = [
    # -- a sibling that shares the root's name as a prefix: /root_evil vs /root
    ("prefix-read", "read_file", {"path": "{tmp}/root_evil/secret.txt"}, OUT),
    ("prefix-write", "write_file", {"path": "{tmp}/root_evil/x.txt", "content": "x"}, OUT),
    ("prefix-list", "list_directory", {"path": "{tmp}/root_evil"}, OUT),
    ("prefix-tree", "directory_tree", {"path": "{tmp}/root_evil"}, OUT),
    ("prefix-grep", "grep", {"pattern": "SECRET", "path": "{tmp}/root_evil"}, OUT),
    ("prefix-glob", "glob", {"pattern": "*", "path": "{tmp}/root_evil"}, OUT),
    # -- ..
    ("dotdot-read", "read_file", {"path": "../secret.txt"}, OUT),
    ("dotdot-deep-read", "read_file", {"path": "sub/../../secret.txt"}, OUT),
    ("dotdot-abs-read", "read_file", {"path": "{root}/../secret.txt"}, OUT),
    ("dotdot-write", "write_file", {"path": "../new.txt", "content": "x"}, OUT),
    ("dotdot-edit", "edit_file", {"path": "../secret.txt", "edits": [{"old_text": "SECRET", "new_text": "pwned"}]}, OUT),
    ("dotdot-list", "list_directory", {"path": ".."}, OUT),
    ("dotdot-tree", "directory_tree", {"path": "sub/../.."}, OUT),
    ("dotdot-mkdir", "make_directory", {"path": "../newdir"}, OUT),
    ("dotdot-move-dst", "move", {"source": "inside.txt", "destination": "../moved.txt"}, OUT),
    ("dotdot-move-src", "move", {"source": "../secret.txt", "destination": "stolen.txt"}, OUT),
    ("dotdot-info", "file_info", {"path": "../secret.txt"}, OUT),
    ("dotdot-grep", "grep", {"pattern": "SECRET", "path": ".."}, OUT),
    ("dotdot-glob", "glob", {"pattern": "*", "path": "../outside"}, OUT),
    ("dotdot-many", "read_many", {"paths": ["../secret.txt"]}, "per-file"),
    ("abs-elsewhere", "read_file", {"path": "/etc/passwd"}, OUT),
    # -- symlinks leaving the root (relative, absolute, via ..)
    ("link-read", "read_file", {"path": "link_out"}, OUT),
    ("link-abs-read", "read_file", {"path": "link_out_abs"}, OUT),
    ("link-dotdot-read", "read_file", {"path": "link_dotdot"}, OUT),
    ("link-write", "write_file", {"path": "link_out", "content": "pwned"}, OUT),
    ("link-abs-write", "write_file", {"path": "link_out_abs", "content": "pwned"}, OUT),
    ("link-edit", "edit_file", {"path": "link_out", "edits": [{"old_text": "SECRET", "new_text": "pwned"}]}, OUT),
    ("link-grep-file", "grep", {"pattern": "SECRET", "path": "link_out"}, OUT),
    ("dirlink-list", "list_directory", {"path": "dir_out"}, OUT),
    ("dirlink-abs-list", "list_directory", {"path": "dir_out_abs"}, OUT),
    ("dirlink-tree", "directory_tree", {"path": "dir_out"}, OUT),
    ("dirlink-grep", "grep", {"pattern": "SECRET", "path": "dir_out"}, OUT),
    ("dirlink-glob", "glob", {"pattern": "*", "path": "dir_out_abs"}, OUT),
    # -- a symlinked parent directory
    ("parent-read", "read_file", {"path": "dir_out/secret.txt"}, OUT),
    ("parent-write", "write_file", {"path": "dir_out/new.txt", "content": "x"}, OUT),
    ("parent-abs-write", "write_file", {"path": "dir_out_abs/new.txt", "content": "x"}, OUT),
    ("parent-mkdir", "make_directory", {"path": "dir_out/newdir"}, OUT),
    ("parent-move-dst", "move", {"source": "inside.txt", "destination": "dir_out/moved.txt"}, OUT),
    ("parent-info", "file_info", {"path": "dir_out/secret.txt"}, OUT),
    # -- dangling symlinks as write targets (outside, and even inside)
    ("dangling-out-write", "write_file", {"path": "dangling_out", "content": "x"}, OUT),
    ("dangling-in-write", "write_file", {"path": "dangling_in", "content": "x"}, "not_found"),
    ("dangling-out-mkdir", "make_directory", {"path": "dangling_out"}, OUT),
    # -- NUL bytes
    ("nul-read", "read_file", {"path": "inside.txt\x00../../secret.txt"}, "invalid_arguments"),
    ("nul-write", "write_file", {"path": "x\x00y", "content": "x"}, "invalid_arguments"),
    ("nul-list", "list_directory", {"path": "sub\x00"}, "invalid_arguments"),
    # -- a symlink loop ends, it does not hang
    ("loop-read", "read_file", {"path": "loop"}, "io_error"),
]


def _fill(value: Any, world: World) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(world.tmp)).replace("{root}", str(world.root))
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


def _cases() -> list[Any]:
    """Each escape once; grep and glob once per engine."""
    out = []
    for case_id, tool, args, code in ESCAPES:
        for engine in ("ripgrep", "python") if tool in ("grep", "glob") else ("ripgrep",):
            marks = [pytest.mark.skipif(RG is None, reason="no rg binary")] if engine == "ripgrep" and tool in ("grep", "glob") else []
            out.append(pytest.param(tool, args, code, engine, id=f"{case_id}-{engine}" if tool in ("grep", "glob") else case_id, marks=marks))
    return out


@pytest.mark.parametrize(("tool", "args", "code", "engine"), _cases())
async def test_escape_is_refused(world: World, engine: str, tool: str, args: dict[str, Any], code: str) -> None:
    async with Rune([world.root], ripgrep=engine == "ripgrep") as rune:
        if code == "per-file":
            result = await rune.call(tool, _fill(args, world))
            assert all(f["error"].startswith(OUT) and "content" not in f for f in result["files"])
        else:
            with pytest.raises(RuneError) as err:
                await rune.call(tool, _fill(args, world))
            assert err.value.code == code, err.value
            assert "SECRET" not in str(err.value)
    world.untouched()


@pytest.mark.parametrize("engine", ENGINES)
async def test_searches_of_the_root_never_follow_links_out(world: World, engine: str) -> None:
    async with Rune([world.root], ripgrep=engine == "ripgrep") as rune:
        found = await rune.call("grep", {"pattern": "SECRET", "hidden": True, "gitignore": False})
        assert found["matches"] == []
        tree = await rune.call("directory_tree", {"max_depth": 10, "hidden": True})
        assert all(not e["path"].startswith("dir_out/") for e in tree["entries"])
        assert {e["path"]: e["type"] for e in tree["entries"]}["dir_out"] == "symlink"
        files = await rune.call("glob", {"pattern": "**/secret.txt", "hidden": True, "gitignore": False})
        assert files["matches"] == []


async def test_symlinks_inside_the_root_are_followed(rune: Rune, world: World) -> None:
    assert (await rune.call("read_file", {"path": "link_in"}))["content"] == "inside\n"
    assert (await rune.call("read_file", {"path": "link_in_abs"}))["content"] == "inside\n"
    assert (await rune.call("read_file", {"path": "dir_in/file.txt"}))["path"] == "sub/file.txt"
    listed = await rune.call("list_directory", {"path": "dir_in"})
    assert [e["name"] for e in listed["entries"]] == ["file.txt"]
    await rune.call("write_file", {"path": "link_in", "content": "changed\n"})
    assert (world.root / "link_in").is_symlink()
    assert (world.root / "inside.txt").read_text() == "changed\n"
    world.untouched()


async def test_moving_a_link_moves_the_link_itself(rune: Rune, world: World) -> None:
    await rune.call("move", {"source": "link_out", "destination": "sub/link_moved"})
    assert os.readlink(world.root / "sub" / "link_moved") == "../secret.txt"
    with pytest.raises(RuneError) as err:  # now it points at root/secret.txt, which does not exist
        await rune.call("read_file", {"path": "sub/link_moved"})
    assert err.value.code == "not_found"
    world.untouched()


async def test_writes_into_git_internals_are_refused(rune: Rune, world: World) -> None:
    (world.root / ".git").mkdir()
    os.symlink(".git", world.root / "g")
    for tool, args in [
        ("write_file", {"path": ".git/config", "content": "[core]\n\thooksPath = x\n"}),
        ("write_file", {"path": "g/hooks/pre-commit", "content": "#!/bin/sh\n"}),
        ("write_file", {"path": "sub/.GIT", "content": "gitdir: /elsewhere\n"}),
        ("make_directory", {"path": ".git/hooks"}),
        ("move", {"source": "inside.txt", "destination": ".git/x"}),
    ]:
        with pytest.raises(RuneError) as err:
            await rune.call(tool, args)
        assert err.value.code == "protected", (tool, args)
    assert list((world.root / ".git").iterdir()) == []


# -- a path swapped between the check and the open --------------------------------------------


class _Swapper:
    """Wrap os.open: the first time `name` is opened relative to a dir fd, swap it for a
    symlink to `target` just before the real open runs (the race a check-then-open loses)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, parent: str, name: str, target: str) -> None:
        self.real_open = os.open
        self.parent, self.name, self.target = parent, name, target
        self.fired = False
        monkeypatch.setattr(sandbox_mod.os, "open", self)

    def __call__(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if not self.fired and dir_fd is not None and path == self.name:
            self.fired = True
            victim = os.path.join(self.parent, self.name)
            os.rename(victim, victim + ".orig")
            os.symlink(self.target, victim)
        return self.real_open(path, flags, mode, dir_fd=dir_fd)


async def test_file_swapped_for_a_symlink_before_open(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    with Rune([world.root]) as rune:
        swap = _Swapper(monkeypatch, str(world.root / "sub"), "file.txt", str(world.secret))
        with pytest.raises(RuneError) as err:
            await rune.call("read_file", {"path": "sub/file.txt"})
    assert swap.fired and err.value.code == OUT
    world.untouched()


async def test_directory_swapped_for_a_symlink_mid_walk(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    with Rune([world.root]) as rune:
        swap = _Swapper(monkeypatch, str(world.root), "sub", str(world.outside))
        with pytest.raises(RuneError) as err:
            await rune.call("write_file", {"path": "sub/planted.txt", "content": "x"})
    assert swap.fired and err.value.code == OUT
    world.untouched()


async def test_write_target_swapped_for_a_symlink_is_replaced_not_followed(world: World) -> None:
    # atomic_write renames over the name: whatever sits there at the end is replaced, never written through
    from rune.fs import atomic_write

    fd = os.open(world.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.symlink(world.secret, world.root / "swapped")
        atomic_write(fd, "swapped", b"mine\n", None)
    finally:
        os.close(fd)
    assert not (world.root / "swapped").is_symlink()
    assert (world.root / "swapped").read_text() == "mine\n"
    world.untouched()
