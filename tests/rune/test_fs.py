"""The file tools, one behaviour at a time."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rune import Rune, RuneError
from tests.rune.conftest import World


async def _err(rune: Rune, tool: str, args: dict[str, object]) -> str:
    with pytest.raises(RuneError) as err:
        await rune.call(tool, args)
    return err.value.code


LINES = "".join(f"line {i}\n" for i in range(1, 101))


@pytest.fixture
def lines(world: World) -> Path:
    p = world.root / "lines.txt"
    p.write_text(LINES)
    return p


# -- read_file ----------------------------------------------------------------------------------


async def test_read_whole_file(rune: Rune, lines: Path) -> None:
    r = await rune.call("read_file", {"path": "lines.txt"})
    assert r["content"] == LINES
    assert (r["start_line"], r["end_line"], r["total_lines"], r["truncated"]) == (1, 100, 100, False)
    assert r["size"] == len(LINES) and r["path"] == "lines.txt"


@pytest.mark.parametrize(
    ("args", "first", "last"),
    [
        ({"start_line": 10, "end_line": 12}, 10, 12),
        ({"start_line": 99}, 99, 100),
        ({"end_line": 2}, 1, 2),
        ({"head": 3}, 1, 3),
        ({"tail": 3}, 98, 100),
        ({"start_line": 100, "end_line": 500}, 100, 100),
    ],
)
async def test_read_ranges(rune: Rune, lines: Path, args: dict[str, int], first: int, last: int) -> None:
    r = await rune.call("read_file", {"path": "lines.txt", **args})
    assert r["content"] == "".join(f"line {i}\n" for i in range(first, last + 1))
    assert (r["start_line"], r["end_line"], r["total_lines"]) == (first, last, 100)


async def test_read_past_the_end_and_empty_files(rune: Rune, world: World, lines: Path) -> None:
    r = await rune.call("read_file", {"path": "lines.txt", "start_line": 500})
    assert (r["content"], r["start_line"], r["end_line"], r["total_lines"]) == ("", None, None, 100)
    (world.root / "empty").write_text("")
    r = await rune.call("read_file", {"path": "empty"})
    assert (r["content"], r["total_lines"]) == ("", 0)
    (world.root / "nonl").write_text("a\nb")
    r = await rune.call("read_file", {"path": "nonl", "head": 1})
    assert (r["content"], r["total_lines"]) == ("a\n", 2)


async def test_read_max_bytes_truncates(rune: Rune, lines: Path) -> None:
    r = await rune.call("read_file", {"path": "lines.txt", "max_bytes": 20})
    assert r["truncated"] and r["content"] == "line 1\nline 2\n" and r["end_line"] == 2
    r = await rune.call("read_file", {"path": "lines.txt", "tail": 10, "max_bytes": 20})
    assert r["truncated"] and r["content"] == "line 99\nline 100\n" and r["start_line"] == 99
    r = await rune.call("read_file", {"path": "lines.txt", "max_bytes": 3})
    assert r["truncated"] and r["content"] == "lin"


async def test_read_refusals(rune: Rune, world: World) -> None:
    (world.root / "bin").write_bytes(b"\x7fELF\x00\x01")
    os.mkfifo(world.root / "fifo")
    assert await _err(rune, "read_file", {"path": "bin"}) == "binary"
    assert await _err(rune, "read_file", {"path": "fifo"}) == "not_a_file"  # and it did not block
    assert await _err(rune, "read_file", {"path": "sub"}) == "is_a_directory"
    assert await _err(rune, "read_file", {"path": "nope.txt"}) == "not_found"
    assert await _err(rune, "read_file", {"path": "nope/x.txt"}) == "not_found"
    assert await _err(rune, "read_file", {"path": "inside.txt/x"}) == "not_a_directory"


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"path": 3},
        {"path": ""},
        {"path": "a", "head": 1, "tail": 1},
        {"path": "a", "head": 1, "start_line": 1},
        {"path": "a", "start_line": 5, "end_line": 4},
        {"path": "a", "start_line": 0},
        {"path": "a", "head": True},
        {"path": "a", "bogus": 1},
    ],
)
async def test_read_invalid_arguments(rune: Rune, args: dict[str, object]) -> None:
    assert await _err(rune, "read_file", args) == "invalid_arguments"


async def test_read_many_reports_each_file(rune: Rune) -> None:
    r = await rune.call("read_many", {"paths": ["inside.txt", "nope.txt", "sub/file.txt"]})
    ok, missing, sub = r["files"]
    assert ok == {"path": "inside.txt", "content": "inside\n", "total_lines": 1, "truncated": False}
    assert missing["path"] == "nope.txt" and missing["error"].startswith("not_found")
    assert sub["content"] == "one\ntwo\nthree\n"


# -- write_file, edit_file -----------------------------------------------------------------------


async def test_write_creates_and_replaces(rune: Rune, world: World) -> None:
    r = await rune.call("write_file", {"path": "new/deep/f.txt", "content": "héllo\n"})
    assert r == {"path": "new/deep/f.txt", "bytes_written": 7, "created": True}
    target = world.root / "new" / "deep" / "f.txt"
    assert target.read_text() == "héllo\n"
    target.chmod(0o600)
    r = await rune.call("write_file", {"path": "new/deep/f.txt", "content": "bye\n"})
    assert r["created"] is False and target.read_text() == "bye\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]  # no temp files left


async def test_write_refusals(rune: Rune) -> None:
    assert await _err(rune, "write_file", {"path": "a/b.txt", "content": "", "create_parents": False}) == "not_found"
    assert await _err(rune, "write_file", {"path": "sub", "content": ""}) == "is_a_directory"
    assert await _err(rune, "write_file", {"path": ".", "content": ""}) == "is_a_directory"
    assert await _err(rune, "write_file", {"path": "inside.txt/x", "content": ""}) == "not_a_directory"


async def test_edit_replaces_exactly_once(rune: Rune, world: World) -> None:
    r = await rune.call("edit_file", {"path": "sub/file.txt", "edits": [{"old_text": "two\n", "new_text": "2\n"}]})
    assert r["applied"] and r["replacements"] == 1
    assert r["diff"] == "--- a/sub/file.txt\n+++ b/sub/file.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three\n"
    assert (world.root / "sub" / "file.txt").read_text() == "one\n2\nthree\n"


async def test_edit_dry_run_writes_nothing(rune: Rune, world: World) -> None:
    r = await rune.call(
        "edit_file",
        {"path": "sub/file.txt", "edits": [{"old_text": "one", "new_text": "1"}, {"old_text": "1\ntwo", "new_text": "x"}],
         "dry_run": True},
    )
    assert not r["applied"] and r["replacements"] == 2 and "-one\n-two\n+x\n" in r["diff"]
    assert (world.root / "sub" / "file.txt").read_text() == "one\ntwo\nthree\n"


async def test_edit_match_rules(rune: Rune, world: World) -> None:
    (world.root / "rep.txt").write_text("a a a\n")
    e = lambda old, new, **kw: {"path": "rep.txt", "edits": [{"old_text": old, "new_text": new, **kw}]}  # noqa: E731
    assert await _err(rune, "edit_file", e("a", "b")) == "ambiguous_match"
    assert await _err(rune, "edit_file", e("zzz", "b")) == "no_match"
    assert await _err(rune, "edit_file", e("", "b")) == "invalid_arguments"
    r = await rune.call("edit_file", e("a", "b", replace_all=True))
    assert r["replacements"] == 3 and (world.root / "rep.txt").read_text() == "b b b\n"
    assert (world.root / "rep.txt").read_text() == "b b b\n"


async def test_edit_crlf_file_with_lf_old_text(rune: Rune, world: World) -> None:
    (world.root / "dos.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    await rune.call("edit_file", {"path": "dos.txt", "edits": [{"old_text": "one\ntwo", "new_text": "1\n2"}]})
    assert (world.root / "dos.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"


async def test_edit_diff_marks_missing_final_newline(rune: Rune, world: World) -> None:
    (world.root / "n.txt").write_text("x\ny")
    r = await rune.call("edit_file", {"path": "n.txt", "edits": [{"old_text": "y", "new_text": "z"}]})
    assert r["diff"].endswith("-y\n\\ No newline at end of file\n+z\n\\ No newline at end of file\n")


async def test_edit_refuses_binary(rune: Rune, world: World) -> None:
    (world.root / "b.bin").write_bytes(b"ab\x00cd")
    (world.root / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert await _err(rune, "edit_file", {"path": "b.bin", "edits": [{"old_text": "ab", "new_text": "x"}]}) == "binary"
    assert await _err(rune, "edit_file", {"path": "latin1.txt", "edits": [{"old_text": "caf", "new_text": "x"}]}) == "binary"


# -- listing ------------------------------------------------------------------------------------


async def test_list_directory(rune: Rune, world: World) -> None:
    (world.root / ".hidden").write_text("")
    r = await rune.call("list_directory", {})
    by_name = {e["name"]: e for e in r["entries"]}
    assert by_name["inside.txt"] == {"name": "inside.txt", "type": "file", "size": 7}
    assert by_name["sub"] == {"name": "sub", "type": "directory"}
    assert by_name["link_out"] == {"name": "link_out", "type": "symlink", "target": "../secret.txt"}
    assert ".hidden" in by_name and r["path"] == "." and not r["truncated"]
    assert [e["name"] for e in r["entries"]] == sorted(by_name)
    r = await rune.call("list_directory", {"path": ".", "max_entries": 2})
    assert len(r["entries"]) == 2 and r["truncated"]


async def test_directory_tree(rune: Rune, world: World) -> None:
    (world.root / "sub" / "deeper").mkdir()
    (world.root / "sub" / "deeper" / "x.py").write_text("")
    (world.root / ".gitignore").write_text("*.log\n")
    (world.root / "sub" / "noise.log").write_text("")
    (world.root / ".cfg").mkdir()
    r = await rune.call("directory_tree", {"max_depth": 2})
    paths = [e["path"] for e in r["entries"]]
    assert "sub/deeper" in paths and "sub/deeper/x.py" not in paths  # depth 3
    assert "sub/noise.log" not in paths and ".cfg" not in paths and ".gitignore" not in paths
    assert {e["path"]: e["depth"] for e in r["entries"]}["sub/file.txt"] == 2
    assert paths.index("sub") < paths.index("sub/file.txt")
    r = await rune.call("directory_tree", {"max_depth": 5, "hidden": True, "gitignore": False})
    paths = [e["path"] for e in r["entries"]]
    assert {"sub/deeper/x.py", "sub/noise.log", ".cfg", ".gitignore"} <= set(paths)
    r = await rune.call("directory_tree", {"path": "sub", "max_entries": 1})
    assert r["truncated"] and len(r["entries"]) == 1 and r["path"] == "sub"


# -- changing the tree --------------------------------------------------------------------------


async def test_move(rune: Rune, world: World) -> None:
    r = await rune.call("move", {"source": "inside.txt", "destination": "sub/renamed.txt"})
    assert r == {"source": "inside.txt", "destination": "sub/renamed.txt", "replaced": False}
    assert (world.root / "sub" / "renamed.txt").read_text() == "inside\n"
    assert await _err(rune, "move", {"source": "sub/renamed.txt", "destination": "sub/file.txt"}) == "exists"
    r = await rune.call("move", {"source": "sub/renamed.txt", "destination": "sub/file.txt", "overwrite": True})
    assert r["replaced"] and (world.root / "sub" / "file.txt").read_text() == "inside\n"
    assert await _err(rune, "move", {"source": "sub", "destination": "a/b/c"}) == "not_found"
    await rune.call("move", {"source": "sub", "destination": "a/b/c", "create_parents": True})
    assert (world.root / "a" / "b" / "c" / "file.txt").exists()
    assert await _err(rune, "move", {"source": ".", "destination": "elsewhere"}) == "invalid_arguments"
    assert await _err(rune, "move", {"source": "nope", "destination": "x"}) == "not_found"


async def test_make_directory(rune: Rune, world: World) -> None:
    assert await rune.call("make_directory", {"path": "x/y/z"}) == {"path": "x/y/z", "created": True}
    assert await rune.call("make_directory", {"path": "x/y/z"}) == {"path": "x/y/z", "created": False}
    assert (world.root / "x" / "y" / "z").is_dir()
    assert await _err(rune, "make_directory", {"path": "p/q", "parents": False}) == "not_found"
    assert await _err(rune, "make_directory", {"path": "inside.txt"}) == "exists"
    assert (await rune.call("make_directory", {"path": "dir_in"}))["created"] is False  # a link to a dir in the root


async def test_file_info(rune: Rune, world: World) -> None:
    r = await rune.call("file_info", {"path": "inside.txt"})
    assert r["type"] == "file" and r["size"] == 7 and r["mode"] == f"{stat.S_IMODE((world.root / 'inside.txt').stat().st_mode):04o}"
    assert r["target"] is None and r["modified"].endswith("+00:00")
    r = await rune.call("file_info", {"path": "link_in"})
    assert (r["type"], r["target"], r["resolves_to"]) == ("symlink", "inside.txt", "inside.txt")
    r = await rune.call("file_info", {"path": "link_out"})  # the link is in the root; its target is not described
    assert (r["type"], r["target"], r["resolves_to"]) == ("symlink", "../secret.txt", None)
    assert (await rune.call("file_info", {"path": "sub"}))["type"] == "directory"
    assert (await rune.call("file_info", {"path": "."}))["path"] == "."


# -- roots --------------------------------------------------------------------------------------


async def test_multiple_roots(world: World, tmp_path: Path) -> None:
    second = tmp_path / "second"
    second.mkdir()
    (second / "s.txt").write_text("second\n")
    async with Rune([world.root, second]) as rune:
        assert rune.roots == (str(world.root), str(second))
        r = await rune.call("read_file", {"path": str(second / "s.txt")})
        assert r["path"] == str(second / "s.txt") and r["content"] == "second\n"
        assert (await rune.call("read_file", {"path": "inside.txt"}))["path"] == "inside.txt"
        with pytest.raises(RuneError) as err:
            await rune.call("read_file", {"path": str(world.root) + "_evil/secret.txt"})
        assert err.value.code == "outside_roots"
        r = await rune.call("move", {"source": "inside.txt", "destination": str(second / "moved.txt")})
        assert r["destination"] == str(second / "moved.txt")


async def test_root_given_through_a_symlink(world: World, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    os.symlink(world.root, alias)
    async with Rune([alias]) as rune:
        r = await rune.call("read_file", {"path": str(world.root / "inside.txt")})  # the real path works too
        assert r["path"] == "inside.txt"
        assert (await rune.call("read_file", {"path": str(alias / "inside.txt")}))["content"] == "inside\n"


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(RuneError) as err:
        Rune([tmp_path / "missing"])
    assert err.value.code == "not_found"
    (tmp_path / "f").write_text("")
    with pytest.raises(RuneError):
        Rune([tmp_path / "f"])
    with pytest.raises(RuneError):
        Rune([])
