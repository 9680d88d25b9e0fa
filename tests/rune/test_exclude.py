"""Exclusions: Rune leaves out the paths its caller names, in every tool, both grep engines, and git.

Rune stays policy-free: ``Rune(exclude=..., exclude_content=...)``, ``--exclude``, a call's
``exclude=`` or the ``rune/exclude`` key of an MCP call's ``_meta`` say what to leave out;
Rune executes it. Glyph's end-to-end tests (tests/glyph/test_deny_rules_hold.py) go through
Glyph; these pin Rune's side down, including the parsers the git filtering relies on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from rune import Rune, RuneError
from rune.exclude import Exclusions
from rune.git import split_rev_path
from rune.patch import drop_sections, drop_stat_lines, section_names, stat_names, unquote
from rune.sandbox import Location, Root
from rune.server import build_server
from tests.rune.conftest import ENGINES, git

SECRET = "Zq8v-RUNE-SECRET-1234"
PROJECT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> None:
    for rel, text in {"a.txt": "KEY here\n", ".env": f"KEY={SECRET}\n", "sub/.env": f"KEY={SECRET}\n",
                      "sub/b.txt": "KEY b\n", "secrets/k.pem": f"{SECRET}\n", "secrets/readme": "KEY r\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    _tree(root)
    return root


def _blob(result: Any) -> str:
    return json.dumps(result)


# -- the file tools and both search engines --------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_walks_and_searches_leave_excluded_paths_out(tree: Path, engine: str) -> None:
    async with Rune([tree], ripgrep=engine == "ripgrep", exclude=["**/.env", "secrets"]) as rune:
        for tool, args in (("grep", {"pattern": "KEY", "hidden": True, "gitignore": False}),
                           ("grep", {"pattern": SECRET, "literal": True, "hidden": True}),
                           ("glob", {"pattern": "**/*", "hidden": True}),
                           ("directory_tree", {"hidden": True, "max_depth": 5}),
                           ("list_directory", {}), ("list_directory", {"path": "sub"})):
            out = _blob(await rune.call(tool, args))
            assert SECRET not in out and ".env" not in out and "secrets" not in out, (tool, out)
        grep = await rune.call("grep", {"pattern": "KEY", "hidden": True})
        assert [m["path"] for m in grep["matches"]] == ["a.txt", "sub/b.txt"] and grep["count"] == 2
        for tool, args in (("read_file", {"path": ".env"}), ("read_file", {"path": "secrets/readme"}),
                           ("grep", {"pattern": "K", "path": "sub/.env"}), ("list_directory", {"path": "secrets"}),
                           ("file_info", {"path": "sub/.env"}), ("write_file", {"path": "x/.env", "content": "x"}),
                           ("read_file", {"path": "sub/../.env"}), ("read_file", {"path": str(tree / ".env")})):
            with pytest.raises(RuneError) as err:
                await rune.call(tool, args)
            assert err.value.code == "excluded", (tool, args, err.value)
        assert not (tree / "x").exists()  # refused before anything was created


@pytest.mark.parametrize("engine", ENGINES)
async def test_call_exclusions_add_to_the_runes_own(tree: Path, engine: str) -> None:
    async with Rune([tree], ripgrep=engine == "ripgrep", exclude=["secrets"]) as rune:
        plain = await rune.call("grep", {"pattern": "KEY", "hidden": True})
        assert ".env" in {m["path"] for m in plain["matches"]}
        call = await rune.call("grep", {"pattern": "KEY", "hidden": True}, exclude=["**/.env"])
        assert {m["path"] for m in call["matches"]} == {"a.txt", "sub/b.txt"}
        again = await rune.call("grep", {"pattern": "KEY", "hidden": True})  # a call's exclusions do not stick
        assert ".env" in {m["path"] for m in again["matches"]}


@pytest.mark.parametrize("engine", ENGINES)
async def test_exclude_content_lists_names_but_reads_nothing(tree: Path, engine: str) -> None:
    async with Rune([tree], ripgrep=engine == "ripgrep", exclude_content=["**/.env"]) as rune:
        listing = await rune.call("list_directory", {})
        assert ".env" in {e["name"] for e in listing["entries"]}
        glob = await rune.call("glob", {"pattern": "**/.env", "hidden": True})
        assert glob["matches"] == [".env", "sub/.env"]
        info = await rune.call("file_info", {"path": ".env"})
        assert info["type"] == "file"
        grep = await rune.call("grep", {"pattern": SECRET, "literal": True, "hidden": True})
        assert [m["path"] for m in grep["matches"]] == ["secrets/k.pem"]  # not excluded here
        for tool, args in (("read_file", {"path": ".env"}), ("read_many", {"paths": [".env"]}),
                           ("edit_file", {"path": "sub/.env", "edits": [{"old_text": "KEY", "new_text": "K"}],
                                          "dry_run": True})):
            try:
                out = _blob(await rune.call(tool, args))
            except RuneError as exc:
                assert exc.code == "excluded" and "content is excluded" in exc.message
            else:
                assert SECRET not in out and "excluded" in out


async def test_symlinks_into_excluded_paths(tree: Path) -> None:
    os.symlink(".env", tree / "innocent")
    os.symlink("secrets", tree / "dir_link")
    async with Rune([tree], exclude=["**/.env", "secrets"]) as rune:
        for tool, args in (("read_file", {"path": "innocent"}), ("read_file", {"path": "dir_link/readme"}),
                           ("file_info", {"path": "innocent"})):
            with pytest.raises(RuneError) as err:
                await rune.call(tool, args)
            assert err.value.code == "excluded"
        listing = await rune.call("list_directory", {})
        names = {e["name"] for e in listing["entries"]}
        assert "innocent" not in names and "dir_link" not in names  # their targets name excluded paths


async def test_absolute_patterns_match_the_root_as_given_and_as_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    _tree(real)
    link = tmp_path / "link"
    os.symlink(real, link)
    for pattern in (f"{link}/**/.env", f"{real}/**/.env", f"{real}/sub"):
        async with Rune([link], exclude=[pattern]) as rune:
            with pytest.raises(RuneError):
                await rune.call("read_file", {"path": "sub/.env"})
            assert (await rune.call("read_file", {"path": "a.txt"}))["content"] == "KEY here\n"
    async with Rune([real], exclude=[f"{tmp_path}/*"]) as rune:  # matches the root itself: never excluded
        assert (await rune.call("read_file", {"path": "a.txt"}))["content"] == "KEY here\n"


@pytest.mark.parametrize("bad", [[""], ["a\0b"], "**/.env", [3]])
def test_bad_patterns_are_refused(tree: Path, bad: Any) -> None:
    with pytest.raises(RuneError) as err:
        Rune([tree], exclude=bad)
    assert err.value.code == "invalid_arguments"


# -- matching and git pathspecs --------------------------------------------------------------------


ROOT = Root(0, "/home/me/proj", "/data/proj", -1, ())


@pytest.mark.parametrize(("pattern", "parts", "hit"), [
    ("**/.env", (".env",), True),
    ("**/.env", ("a", "b", ".env"), True),
    ("**/.env", ("a", ".env", "inside"), True),  # a matched directory covers what is inside
    ("**/.env", ("a", "x.env"), False),
    ("secrets/*", ("secrets",), False),
    ("secrets/*", ("secrets", "k"), True),
    ("*.key", ("a", "b.key"), False),
    ("/home/me/proj/*.key", ("b.key",), True),
    ("/data/proj/**/*.key", ("x", "b.key"), True),
    ("/home/*", ("a.txt",), False),  # only the root's ancestors match: a root is never excluded
    ("**", ("anything",), True),
])
def test_matching(pattern: str, parts: tuple[str, ...], hit: bool) -> None:
    assert Exclusions.of([pattern]).hidden(Location(ROOT, parts)) == hit


@pytest.mark.parametrize(("pattern", "worktree", "specs"), [
    ("**/.env", (), [":(exclude,glob)**/.env", ":(exclude,glob).env"]),
    ("**/.env", ("deep", "repo"), [":(exclude,glob)**/.env", ":(exclude,glob).env"]),
    ("repo/secret.txt", ("repo",), [":(exclude,glob)secret.txt"]),
    ("other/secret.txt", ("repo",), []),
    ("/home/me/proj/repo/*.key", ("repo",), [":(exclude,glob)*.key"]),
    ("repo", ("repo",), [":(exclude)*"]),  # the whole repository is covered
    ("a\\b", (), [":(exclude,glob)a\\\\b"]),
])
def test_pathspecs(pattern: str, worktree: tuple[str, ...], specs: list[str]) -> None:
    assert Exclusions.of([pattern]).pathspecs(Location(ROOT, worktree), content=False) == specs


@pytest.mark.parametrize(("rev", "split"), [
    ("HEAD", None), ("HEAD:.env", ("HEAD", ".env")), (":.env", ("", ".env")), (":2:a/b", (":2", "a/b")),
    (":/fix: it", None), ("HEAD@{2024-01-01 10:00:00}:x", ("HEAD@{2024-01-01 10:00:00}", "x")),
    ("HEAD^{/a: b}", None), ("HEAD^{/a: b}:c", ("HEAD^{/a: b}", "c")), ("main:", ("main", "")),
])
def test_revisions_naming_paths(rev: str, split: tuple[str, str] | None) -> None:
    assert split_rev_path(rev) == split


# -- reading names out of git's text ---------------------------------------------------------------


PATCH = (
    "commit 1\n\n    msg\n\n"
    "diff --git a/keep.txt b/keep.txt\n--- a/keep.txt\n+++ b/keep.txt\n@@ -1 +1 @@\n-a\n+b\n"
    "diff --git a/.env b/public.txt\nsimilarity index 80%\nrename from .env\nrename to public.txt\n"
    "--- a/.env\n+++ b/public.txt\n@@ -1 +1 @@\n-SECRET\n+x\n"
    'diff --git "a/sp ace/\\303\\251\\t.env" "b/sp ace/\\303\\251\\t.env"\n--- "a/sp ace/\\303\\251\\t.env"\n'
    '+++ "b/sp ace/\\303\\251\\t.env"\n@@ -1 +1 @@\n-SECRET\n+SECRET2\n'
    "diff --git a/bin/.env b/bin/.env\nindex 1..2 100644\nBinary files a/bin/.env and b/bin/.env differ\n"
    "diff --cc m/.env\nindex 1,2..3\n--- a/m/.env\n+++ b/m/.env\n@@@ -1 -1 +1 @@@\n- SECRET\n"
    "diff --git a/x b/x b/x b/x\nnew file mode 100644\n--- /dev/null\n+++ b/x b/x\n@@ -0,0 +1 @@\n+fine\n"
    "diff --git broken\n@@ -1 +1 @@\n-SECRET\n"
)


def test_patch_sections_naming_excluded_paths_are_dropped() -> None:
    def excluded(name: str) -> bool:
        return name.split("/")[-1].endswith(".env")

    kept = drop_sections(PATCH, excluded)
    assert "SECRET" not in kept and ".env" not in kept
    assert kept.startswith("commit 1\n\n    msg\n\n") and "+b\n" in kept and "+fine\n" in kept
    assert section_names('diff --git "a/sp ace/\\303\\251\\t.env" b/plain\n') == ["sp ace/é\t.env", "plain"]
    assert unquote('"a\\"b\\\\c"') == 'a"b\\c'


def test_stat_lines_naming_excluded_paths_are_dropped() -> None:
    stat = (" a.txt                | 1 +\n {old => new}/.env    | 2 +-\n .env => public.txt | 1 -\n"
            " sub/.env             | 3 +++\n 4 files changed\n")
    assert drop_stat_lines(stat, lambda n: n.endswith(".env")) == " a.txt                | 1 +\n 4 files changed\n"
    assert stat_names("src/{a => b}/c.py") == ["src/a/c.py", "src/b/c.py"]
    assert stat_names("{ => sub}/x") == ["x", "sub/x"]


# -- git ----------------------------------------------------------------------------------------


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A root that is not the repository: the repository is root/proj."""
    root = tmp_path / "root"
    repo = root / "proj"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    (repo / "secret.txt").write_text(f"{SECRET}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    (repo / "a.txt").write_text("b\n")
    (repo / "secret.txt").write_text(f"{SECRET}\nmore\n")
    (repo / "new_secret.txt").write_text(f"{SECRET}\n")
    return root


async def test_git_exclusions_are_relative_to_the_root_not_the_repository(nested: Path) -> None:
    async with Rune([nested], exclude=["proj/secret.txt", "proj/new_*"]) as rune:
        for tool, args in (("git_status", {"path": "proj"}), ("git_diff", {"path": "proj"}),
                           ("git_diff", {"path": "proj", "revision": "HEAD"}), ("git_show", {"path": "proj"}),
                           ("git_show", {"path": "proj", "stat": True}),
                           ("git_show", {"path": "proj", "revision": "HEAD:"})):
            out = _blob(await rune.call(tool, args))
            assert SECRET not in out and "secret.txt" not in out, (tool, out)
        status = await rune.call("git_status", {"path": "proj"})
        assert [e["path"] for e in status["entries"]] == ["proj/a.txt"]
        await rune.call("git_add", {"paths": ["proj"]})
        assert git(nested / "proj", "diff", "--cached", "--name-only").split() == ["a.txt"]


async def test_diff_against_a_tree_or_blob_is_refused(nested: Path) -> None:
    """`git diff HEAD:dir` compares a subtree with the top: its files would show under other names."""
    repo = nested / "proj"
    (repo / "secrets").mkdir()
    (repo / "secrets" / "k.pem").write_text(f"{SECRET}\n")
    git(repo, "add", "secrets")
    git(repo, "commit", "-q", "-m", "two")
    async with Rune([nested], exclude=["proj/secrets", "proj/*secret.txt"]) as rune:
        for rev in ("HEAD:secrets", "HEAD~1..HEAD:secrets", "HEAD:secrets..HEAD", "HEAD^{tree}", "HEAD:a.txt"):
            with pytest.raises(RuneError) as err:
                await rune.call("git_diff", {"path": "proj", "revision": rev})
            assert err.value.code == "invalid_arguments" and "compares commits" in err.value.message, rev
        for rev in ("HEAD", "HEAD~1..HEAD", "HEAD~1...HEAD", "HEAD~1..", "main"):
            out = _blob(await rune.call("git_diff", {"path": "proj", "revision": rev}))
            assert SECRET not in out and "k.pem" not in out, rev
    async with Rune([nested]) as rune:  # without exclusions the diff of a tree still works as in git
        await rune.call("git_diff", {"path": "proj", "revision": "HEAD:secrets"})


@pytest.mark.parametrize(("rev", "ends"), [
    ("HEAD", ["HEAD"]), ("a..b", ["a", "b"]), ("a...b", ["a", "b"]), ("..b", ["HEAD", "b"]), ("a..", ["a", "HEAD"]),
    ("HEAD@{1..2}..x", ["HEAD@{1..2}", "x"]),
])
def test_range_ends(rev: str, ends: list[str]) -> None:
    from rune.git import range_ends

    assert range_ends(rev) == ends


async def test_user_paths_stay_literal_next_to_exclusion_magic(repo: Path) -> None:
    (repo / ":(glob)*").write_text("odd\n")
    async with Rune([repo], exclude=["src"]) as rune:
        await rune.call("git_add", {"paths": [":(glob)*"]})
        assert git(repo, "diff", "--cached", "--name-only").split() == [":(glob)*"]
        diff = await rune.call("git_diff", {"staged": True, "paths": [":(glob)*"]})
        assert [f["path"] for f in diff["files"]] == [":(glob)*"]


# -- over MCP ------------------------------------------------------------------------------------


async def test_mcp_calls_carry_exclusions_in_meta(tree: Path) -> None:
    async with Rune([tree]) as rune, Client(build_server(rune)) as client:
        plain = await client.call_tool("grep", {"pattern": "KEY", "hidden": True})
        assert SECRET in json.dumps(plain.structured_content)
        meta: Any = {"rune/exclude": ["**/.env", "secrets"]}
        hidden = await client.call_tool("grep", {"pattern": "KEY", "hidden": True}, meta=meta)
        assert SECRET not in json.dumps(hidden.structured_content) and not hidden.is_error
        refused = await client.call_tool("read_file", {"path": ".env"}, meta=meta)
        assert refused.is_error and refused.content[0].text.startswith("excluded")  # type: ignore[union-attr]
        bad: Any = {"rune/exclude": "**/.env"}
        wrong = await client.call_tool("grep", {"pattern": "KEY"}, meta=bad)
        assert wrong.is_error and "invalid_arguments" in wrong.content[0].text  # type: ignore[union-attr]


async def test_cli_exclude(tree: Path) -> None:
    params = StdioServerParameters(command=sys.executable, cwd=str(PROJECT), env={"PYTHONPATH": str(PROJECT)},
                                   args=["-m", "rune", "--root", str(tree), "--exclude", "**/.env",
                                         "--exclude-content", "secrets"])
    async with Client(params) as client:
        grep = await client.call_tool("grep", {"pattern": "KEY", "hidden": True})
        assert {m["path"] for m in grep.structured_content["matches"]} == {"a.txt", "sub/b.txt"}  # type: ignore[index]
        listing = await client.call_tool("list_directory", {})
        names = {e["name"] for e in listing.structured_content["entries"]}  # type: ignore[index]
        assert "secrets" in names and ".env" not in names


def test_exclusions_property(tree: Path) -> None:
    with Rune([tree], exclude=["**/.env"], exclude_content=["secrets"]) as rune:
        assert (rune.exclusions.hide, rune.exclusions.content) == (("**/.env",), ("secrets",))
