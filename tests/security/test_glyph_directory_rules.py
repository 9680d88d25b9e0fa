"""Issue 21 item 5: a directory argument is checked against the deny rules for everything under it.

The report: with ``secrets/**`` (or ``**/secrets/**``, ``secrets/*``) denied,
``rune__move {"source": "secrets", "destination": "pub"}`` was put to the user as an ordinary
move, and once allowed, ``pub/key.txt`` was read: the rule named the contents, not the
folder. Now a call that names a directory holding denied paths is refused before anyone is
asked, the denied paths named. Read-only tools of a server that carries out the exclusions
(Rune: grep, tree, glob, git diff over a folder) still run, with the denied paths left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from glyph.config import ServerSpec, parse_config
from glyph.gateway import Gateway
from tests.glyph.fake_server import FakeServer
from tests.security.glyph_rig import AllowingPrompter, glyph_with_rune, text

SECRET = "sk-DENIED-DIR-0123456789"


def plant(root: Path) -> None:
    (root / "secrets" / "deep").mkdir(parents=True)
    (root / "secrets" / "key.txt").write_text(f"{SECRET}\n")
    (root / "secrets" / "deep" / "more.txt").write_text(f"{SECRET}\n")
    (root / "docs").mkdir()
    (root / "docs" / "a.md").write_text("public\n")


@pytest.mark.parametrize("rule", ["secrets/**", "**/secrets/**", "secrets/*"])
async def test_moving_a_folder_that_holds_denied_files_is_refused_and_nobody_is_asked(tmp_path: Path,
                                                                                      rule: str) -> None:
    (tmp_path / "root").mkdir()
    plant(tmp_path / "root")
    prompter = AllowingPrompter()  # a user who would say yes: the rule must hold without them
    async with glyph_with_rune(tmp_path, [{"action": "deny", "path": rule}], prompter) as (client, gateway):
        moved = await client.call_tool("rune__move", {"source": "secrets", "destination": "pub"})
        assert moved.is_error and "Denied by Glyph policy" in text(moved), text(moved)
        assert "secrets/key.txt" in text(moved)  # the denied path is named
        assert prompter.requests == []
        assert not (tmp_path / "root" / "pub").exists() and (tmp_path / "root" / "secrets" / "key.txt").exists()
        read = await client.call_tool("rune__read_file", {"path": "pub/key.txt"})
        assert read.is_error and SECRET not in text(read)
        row = next(r for r in gateway.audit.rows(5) if r["tool"] == "move")
        assert row["tool"] == "move" and row["decision"] == "deny" and row["outcome"] == "denied"
        # a folder with nothing denied inside moves as before (asked, then allowed)
        ok = await client.call_tool("rune__move", {"source": "docs", "destination": "pub-docs"})
        assert not ok.is_error, text(ok)
        assert (tmp_path / "root" / "pub-docs" / "a.md").exists()
        assert [r.tool for r in prompter.requests] == ["read_file", "move"]


async def test_a_parent_folder_counts_too_and_a_git_pathspec_leaves_the_denied_files_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proj").mkdir(parents=True)
    plant(root / "proj")
    await anyio.run_process(["git", "init", "-q", str(root)])
    async with glyph_with_rune(tmp_path, [{"action": "deny", "path": "**/secrets/**"}]) as (client, _):
        moved = await client.call_tool("rune__move", {"source": "proj", "destination": "elsewhere"})
        assert moved.is_error and "proj/secrets/key.txt" in text(moved), text(moved)
        assert (root / "proj" / "secrets" / "key.txt").exists()
        # git add of a folder: Rune's pathspecs exclude the denied files, so the call runs without them
        added = await client.call_tool("rune__git_add", {"paths": ["proj"]})
        assert not added.is_error, text(added)
        staged = (await anyio.run_process(["git", "-C", str(root), "diff", "--cached", "--name-only"])).stdout
        assert b"proj/docs/a.md" in staged and b"secrets" not in staged, staged


async def test_read_only_rune_tools_over_a_folder_still_run_without_the_denied_paths(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    plant(tmp_path / "root")
    rules = [{"action": "deny", "path": "secrets/**"}, {"action": "allow", "server": "rune", "tool": "*"}]
    async with glyph_with_rune(tmp_path, rules) as (client, _):
        for tool, args in (("rune__grep", {"pattern": "DENIED|public", "path": "."}),
                           ("rune__directory_tree", {"path": "secrets"}),
                           ("rune__glob", {"pattern": "**/*.txt"})):
            result = await client.call_tool(tool, args)
            dumped = text(result) + json.dumps(result.structured_content)
            assert not result.is_error, (tool, dumped)
            assert SECRET not in dumped and "key.txt" not in dumped, (tool, dumped)


async def test_a_server_that_does_not_carry_out_exclusions_gets_no_folder_with_denied_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    plant(root)
    fake = FakeServer()
    config = parse_config({"roots": [str(root)], "data_dir": str(tmp_path / "data"), "rune": {"enabled": False},
                           "rules": [{"action": "deny", "path": "secrets/**"},
                                     {"action": "allow", "server": "fake", "tool": "*"}]}, tmp_path)
    gateway = Gateway(config, AllowingPrompter())
    gateway.add_server(ServerSpec(name="fake"), fake.server)
    async with gateway:
        denied = await gateway.call("fake__read_file", {"path": "secrets"})
        assert denied.is_error and "secrets/key.txt" in text(denied)
        allowed = await gateway.call("fake__read_file", {"path": "docs"})
        assert not allowed.is_error
    assert [c for c, _ in fake.calls] == ["read_file"]




def test_a_folder_too_large_to_check_is_not_assumed_clean(tmp_path: Path) -> None:
    from glyph.config import Rule
    from glyph.dircheck import denied_inside

    root = tmp_path / "root"
    (root / "big").mkdir(parents=True)
    for i in range(10):
        (root / "big" / f"f{i}").write_text("x")
    rule = Rule("deny", path="secrets/**", index=1)
    inside = denied_inside(root / "big", [rule], [root], max_entries=5)
    assert inside and inside.too_large and "too many to check" in inside.describe([root])
    assert not denied_inside(root / "big", [rule], [root])  # within the bound: clean
    (root / "big" / "link").symlink_to(root / "big")  # a symlinked folder is not followed
    assert not denied_inside(root / "big", [rule], [root])
