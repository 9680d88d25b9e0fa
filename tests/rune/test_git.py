"""git tools: what they report, and that a repository or an argument cannot make git run code
or reach outside the roots."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rune import Rune, RuneError
from tests.rune.conftest import git


@pytest.fixture
async def rune(repo: Path) -> AsyncIterator[Rune]:
    async with Rune([repo], git_identity=("Rune Test", "rune@example.com")) as r:
        yield r


def _exists(p: Path) -> bool:
    return p.exists()


async def _err(rune: Rune, tool: str, args: dict[str, Any]) -> RuneError:
    with pytest.raises(RuneError) as err:
        await rune.call(tool, args)
    return err.value


# -- reporting ----------------------------------------------------------------------------------


async def test_status(rune: Rune, repo: Path) -> None:
    r = await rune.call("git_status", {})
    assert (r["repo"], r["branch"], r["clean"], r["entries"]) == (".", "main", True, [])
    assert r["head"] == git(repo, "rev-parse", "HEAD").strip()
    (repo / "a.txt").write_text("changed\n")
    (repo / "new.txt").write_text("n\n")
    (repo / "src" / "m.py").write_text("staged\n")
    git(repo, "add", "src/m.py")
    git(repo, "mv", "a.txt", "b.txt")
    r = await rune.call("git_status", {})
    entries = {e["path"]: e for e in r["entries"]}
    assert entries["new.txt"]["kind"] == "untracked"
    assert (entries["src/m.py"]["index"], entries["src/m.py"]["worktree"]) == ("M", ".")
    assert entries["b.txt"]["kind"] == "renamed" and entries["b.txt"]["orig_path"] == "a.txt"
    assert not r["clean"]
    only_src = await rune.call("git_status", {"path": "src"})
    assert [e["path"] for e in only_src["entries"]] == ["src/m.py"]


async def test_diff_unstaged_staged_revision(rune: Rune, repo: Path) -> None:
    (repo / "a.txt").write_text("alpha\nBETA\ngamma\n")
    r = await rune.call("git_diff", {})
    assert r["files"] == [{"added": 1, "deleted": 1, "path": "a.txt", "binary": False}]
    assert "-beta\n+BETA\n" in r["diff"] and r["diff"].startswith("diff --git a/a.txt b/a.txt")
    assert (await rune.call("git_diff", {"staged": True}))["files"] == []
    git(repo, "add", "a.txt")
    assert (await rune.call("git_diff", {"staged": True}))["files"][0]["path"] == "a.txt"
    r = await rune.call("git_diff", {"revision": "HEAD~1"})
    assert "+gamma" in r["diff"] and "+BETA" in r["diff"]
    r = await rune.call("git_diff", {"revision": "HEAD~1..HEAD", "paths": ["src"]})
    assert r["files"] == [] and r["diff"] == ""
    r = await rune.call("git_diff", {"revision": "HEAD~1", "max_bytes": 10})
    assert r["truncated"] and len(r["diff"].encode()) <= 10


async def test_diff_binary_and_rename(rune: Rune, repo: Path) -> None:
    (repo / "blob.bin").write_bytes(b"\x00\x01")
    git(repo, "add", "blob.bin")
    git(repo, "mv", "a.txt", "renamed.txt")
    files = {f["path"]: f for f in (await rune.call("git_diff", {"staged": True}))["files"]}
    assert files["blob.bin"]["binary"] and files["blob.bin"]["added"] is None
    assert files["renamed.txt"]["old_path"] == "a.txt"


async def test_log(rune: Rune, repo: Path) -> None:
    r = await rune.call("git_log", {})
    second, first = r["commits"]
    assert (second["subject"], second["body"], first["subject"]) == ("second", "with a body", "first")
    assert second["parents"] == [first["hash"]] and first["parents"] == []
    assert second["author"] == "Fixture" and second["email"] == "fixture@example.com" and "T" in second["date"]
    assert [c["subject"] for c in (await rune.call("git_log", {"max_count": 1}))["commits"]] == ["second"]
    assert [c["subject"] for c in (await rune.call("git_log", {"paths": ["src/m.py"]}))["commits"]] == ["first"]
    assert [c["subject"] for c in (await rune.call("git_log", {"revision": "HEAD~1..HEAD"}))["commits"]] == ["second"]
    assert [c["subject"] for c in (await rune.call("git_log", {"skip": 1}))["commits"]] == ["first"]


async def test_log_of_an_empty_repository(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    async with Rune([tmp_path]) as rune:
        assert (await rune.call("git_log", {}))["commits"] == []
        assert (await rune.call("git_status", {}))["head"] is None


async def test_show(rune: Rune) -> None:
    r = await rune.call("git_show", {})
    assert r["output"].startswith("commit ") and "+gamma" in r["output"] and not r["truncated"]
    assert (await rune.call("git_show", {"revision": "HEAD~1:a.txt"}))["output"] == "alpha\nbeta\n"
    r = await rune.call("git_show", {"revision": "HEAD", "stat": True})
    assert "a.txt | 1 +" in r["output"] and "@@" not in r["output"]
    assert (await _err(rune, "git_show", {"revision": "nosuchref"})).code == "git_error"


async def test_blame(rune: Rune, repo: Path) -> None:
    r = await rune.call("git_blame", {"path": "a.txt"})
    assert [(ln["line"], ln["text"]) for ln in r["lines"]] == [(1, "alpha"), (2, "beta"), (3, "gamma")]
    assert [ln["summary"] for ln in r["lines"]] == ["first", "first", "second"]
    assert r["lines"][0]["author"] == "Fixture" and r["lines"][0]["email"] == "fixture@example.com"
    r = await rune.call("git_blame", {"path": "a.txt", "start_line": 3, "end_line": 3})
    assert [ln["line"] for ln in r["lines"]] == [3]
    r = await rune.call("git_blame", {"path": "a.txt", "revision": "HEAD~1"})
    assert [ln["text"] for ln in r["lines"]] == ["alpha", "beta"]


async def test_branches(rune: Rune, repo: Path) -> None:
    r = await rune.call("git_branches", {})
    assert r["current"] == "main"
    assert {(b["name"], b["current"]) for b in r["branches"]} == {("main", True), ("feature", False)}
    git(repo, "checkout", "-q", "--detach", "HEAD")
    assert (await rune.call("git_branches", {}))["current"] is None
    assert (await rune.call("git_status", {}))["branch"] is None


async def test_add_and_commit(rune: Rune, repo: Path) -> None:
    (repo / "src" / "new.py").write_text("x = 1\n")
    (repo / "a.txt").unlink()
    r = await rune.call("git_add", {"paths": ["src/new.py", "a.txt"]})
    assert r == {"repo": ".", "paths": ["src/new.py", "a.txt"]}
    r = await rune.call("git_commit", {"message": "-n looks like an option\n\nbody"})
    assert r["commit"] == git(repo, "rev-parse", "HEAD").strip() and r["branch"] == "main"
    assert r["summary"] == "-n looks like an option"
    assert git(repo, "log", "-1", "--format=%an <%ae>|%B").strip() == "Fixture <fixture@example.com>|-n looks like an option\n\nbody"
    assert (await rune.call("git_status", {}))["clean"]
    assert (await _err(rune, "git_commit", {"message": "nothing staged"})).code == "git_error"
    r = await rune.call("git_commit", {"message": "empty", "allow_empty": True})
    assert r["summary"] == "empty"


async def test_commit_identity_when_the_repository_has_none(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("f\n")
    async with Rune([tmp_path], git_identity=("Given Name", "given@example.com")) as rune:
        await rune.call("git_add", {"paths": ["f"]})
        await rune.call("git_commit", {"message": "c"})
    assert git(tmp_path, "log", "-1", "--format=%an <%ae>").strip() == "Given Name <given@example.com>"


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("git_log", {"revision": "--output=/tmp/rune-pwned"}),
        ("git_log", {"revision": "-p"}),
        ("git_diff", {"revision": "--no-index"}),
        ("git_show", {"revision": "--format=%x"}),
        ("git_blame", {"path": "a.txt", "revision": "--contents=/etc/passwd"}),
        ("git_log", {"revision": "HEAD\nmain"}),
        ("git_show", {"revision": "HEAD\x00"}),
    ],
)
async def test_option_like_revisions_are_refused(rune: Rune, tool: str, args: dict[str, Any]) -> None:
    assert (await _err(rune, tool, args)).code == "invalid_arguments"
    assert not _exists(Path("/tmp/rune-pwned"))


async def test_paths_outside_the_repository(tmp_path: Path, repo: Path) -> None:
    (tmp_path / "outside.txt").write_text("o\n")
    async with Rune([repo]) as rune:
        for tool, args in [
            ("git_add", {"paths": ["../outside.txt"]}),
            ("git_blame", {"path": "../outside.txt"}),
            ("git_diff", {"paths": [str(tmp_path / "outside.txt")]}),
            ("git_log", {"paths": ["src/../../outside.txt"]}),
            ("git_status", {"path": ".."}),
        ]:
            assert (await _err(rune, tool, args)).code == "outside_roots", tool
        # a REV:path is read from the repository's own objects; git refuses to climb out of the tree
        for rev in ("HEAD:../outside.txt", f"HEAD:{tmp_path / 'outside.txt'}"):
            err = await _err(rune, "git_show", {"revision": rev})
            assert err.code == "git_error" and "o\n" not in err.message


async def test_pathspec_magic_is_literal(rune: Rune, repo: Path) -> None:
    (repo / "a.txt").write_text("changed\n")
    r = await rune.call("git_diff", {"paths": [":(top)"]})  # a file name, not magic: matches nothing
    assert r["files"] == []
    with pytest.raises(RuneError):
        await rune.call("git_add", {"paths": [":/"]})
    assert (await rune.call("git_diff", {"staged": True}))["files"] == []


async def test_no_repository(tmp_path: Path, repo: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    async with Rune([plain]) as rune:
        assert (await _err(rune, "git_status", {})).code == "not_a_repository"
    # a root inside a repository does not reach up to the repository above it
    async with Rune([repo / "src"]) as rune:
        assert (await _err(rune, "git_log", {})).code == "not_a_repository"


async def test_root_in_the_repo_env_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.hooksPath'='/tmp/evil'")
    async with Rune([repo]) as rune:
        assert len((await rune.call("git_log", {}))["commits"]) == 2


# -- a repository that tries to run code or leave the root ---------------------------------------


HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-index-change",
         "reference-transaction", "pre-auto-gc", "post-checkout")


def _markers(where: Path) -> set[str]:
    return {p.name for p in where.iterdir() if p.name.startswith("marker")}


def _plant(repo: Path, marker: Path) -> None:
    """Every way we know a repository's own config or files could make git run a command."""
    run = f"touch {marker}"
    hooks = repo / ".git" / "hooks"
    other_hooks = repo / "hooks-elsewhere"
    other_hooks.mkdir()
    for d in (hooks, other_hooks):
        for name in HOOKS:
            h = d / name
            h.write_text(f"#!/bin/sh\n{run}.hook-{name}\n")
            h.chmod(h.stat().st_mode | stat.S_IXUSR)
    cfg = {
        "core.hooksPath": str(other_hooks),
        "core.fsmonitor": f"{run}.fsmonitor; false",
        "core.pager": f"{run}.pager; cat",
        "core.editor": f"{run}.editor",
        "core.sshCommand": f"{run}.ssh",
        "core.askPass": f"{run}.askpass",
        "filter.evil.clean": f"{run}.clean; cat",
        "filter.evil.smudge": f"{run}.smudge; cat",
        "filter.evil.required": "true",
        "filter.proc.process": f"{run}.process",
        "filter.a=b.clean": f"{run}.weird-name; cat",
        "diff.evil.textconv": f"{run}.textconv; cat",
        "diff.evil.command": f"{run}.diffcmd",
        "diff.external": f"{run}.external",
        "gpg.program": f"{run}.gpg",
        "commit.gpgSign": "true",
        "log.showSignature": "true",
        "alias.status": f"!{run}.alias",
        "pager.log": f"{run}.pagerlog; cat",
        "sequence.editor": f"{run}.seq",
    }
    for key, value in cfg.items():
        git(repo, "config", key, value)
    (repo / ".gitattributes").write_text("*.txt filter=evil diff=evil\n*.py filter=proc diff=evil\n*.md filter=a=b\n")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("* filter=evil diff=evil\n")


async def test_a_hostile_repository_cannot_run_anything(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    _plant(repo, marker)
    (repo / "a.txt").write_text("alpha\nbeta\ngamma\ndelta\n")
    (repo / "src" / "m.py").write_text("changed\n")
    (repo / "notes.md").write_text("md\n")
    async with Rune([repo], git_identity=("Rune Test", "rune@example.com")) as rune:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("git_status", {}),
            ("git_diff", {}),
            ("git_diff", {"revision": "HEAD~1"}),
            ("git_log", {"paths": ["a.txt"]}),
            ("git_show", {}),
            ("git_show", {"revision": "HEAD:a.txt"}),
            ("git_blame", {"path": "a.txt"}),
            ("git_branches", {}),
            ("git_add", {"paths": ["a.txt", "src/m.py", "notes.md", ".gitattributes"]}),
            ("git_diff", {"staged": True}),
            ("git_commit", {"message": "hostile"}),
            ("git_log", {}),
        ]
        for tool, args in calls:
            await rune.call(tool, args)
    assert _markers(tmp_path) == set()
    # the filters were off, so the content went in unchanged
    assert git(repo, "show", "HEAD:a.txt") == "alpha\nbeta\ngamma\ndelta\n"


def test_hostile_repository_control_is_real(repo: Path, tmp_path: Path) -> None:
    """The planted config does run code under plain git, so the test above tests something."""
    marker = tmp_path / "marker"
    _plant(repo, marker)
    (repo / "a.txt").write_text("changed\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "status"], cwd=repo, env=env, capture_output=True, check=False)
    subprocess.run(["git", "diff"], cwd=repo, env=env, capture_output=True, check=False)
    subprocess.run(["git", "blame", "a.txt"], cwd=repo, env=env, capture_output=True, check=False)
    assert {"marker.fsmonitor", "marker.clean", "marker.textconv"} <= _markers(tmp_path)  # (no pager: not a tty)


async def test_git_dir_outside_the_roots(tmp_path: Path, repo: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / ".git").write_text(f"gitdir: {repo / '.git'}\n")  # a worktree whose history lives elsewhere
    async with Rune([root]) as rune:
        for tool, args in [("git_log", {}), ("git_show", {"revision": "HEAD:a.txt"}), ("git_status", {})]:
            assert (await _err(rune, tool, args)).code == "outside_roots"
        (root / ".git").unlink()
        os.symlink(repo / ".git", root / ".git")  # the same through a symlink
        assert (await _err(rune, "git_log", {})).code == "outside_roots"


async def test_core_worktree_cannot_point_outside(tmp_path: Path, repo: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("SECRET\n")
    git(repo, "config", "core.worktree", str(elsewhere))
    async with Rune([repo]) as rune:
        r = await rune.call("git_status", {})
        assert all("secret" not in e["path"] for e in r["entries"])
        await rune.call("git_add", {"paths": ["a.txt"]})
    assert "secret.txt" not in git(repo, "--work-tree", str(repo), "ls-files")


async def test_alternates_outside_the_roots(tmp_path: Path, repo: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--shared", str(repo), str(clone))  # borrows repo's objects
    async with Rune([clone]) as rune:
        assert (await _err(rune, "git_log", {})).code == "outside_roots"
    async with Rune([clone, repo]) as rune:  # with the lender inside the roots it is fine
        assert len((await rune.call("git_log", {}))["commits"]) == 2
