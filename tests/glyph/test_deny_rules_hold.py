"""A deny rule holds for what a tool reads or shows, not only for its path arguments (issue 9, item 3).

The setting of the report: everything allowed except the documented example rule denying
``**/.env``. Before, the secret in ``.env`` and ``sub/.env`` came back from ``rune__grep``
over ".", ``rune__git_show HEAD``, ``rune__git_show HEAD:.env`` and ``rune__git_diff HEAD~1``,
and glob, directory_tree, list_directory, grep and git_show/diff/status named the files.

One test per Rune tool, through the official MCP client against Glyph (Rune behind it, as
configured by default but in-process to keep the suite fast; one test runs the subprocess),
on a real git repository whose history holds the denied files in every shape a diff can
show them: added, modified, binary, renamed to another denied name, renamed to a public
name with the secret removed, staged, unstaged and untracked. Every result is dumped whole
(content and structuredContent) and must hold neither the secret nor a denied name.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

from glyph.config import parse_config
from glyph.gateway import Gateway
from glyph.server import build_server
from tests.glyph.fake_server import FakeServer
from tests.rune.conftest import git

pytest.importorskip("rune.server")

SECRET = "sk-ant-api03-DENIED-Zq8vW1xY2zA3bC4dE5fG6hI7"
PIECE = "DENIED-Zq8v"  # a fragment a grep might look for
DENIED = ".env"
RULES = [{"tool": "*", "action": "allow"}, {"tool": "*", "path": "**/.env", "action": "deny"}]


@dataclass
class Repo:
    root: Path
    first: str  # the first commit
    env_blob: str  # the object id of .env at HEAD


def make_repo(tmp: Path) -> Repo:
    root = tmp / "proj"
    for d in ("sub", "src", "bin", "old", "moved"):
        (root / d).mkdir(parents=True)
    git(root, "init", "-q")
    (root / "a.txt").write_text("alpha\nKEY is read from the environment\n")
    (root / "src" / "app.py").write_text("import os\nKEY = os.getenv('KEY')\n")
    (root / "sub" / "notes.md").write_text("notes\n")
    (root / DENIED).write_text(f"KEY={SECRET}\nMODE=dev\n")
    (root / "sub" / DENIED).write_text(f"SUB_KEY={SECRET}\n")
    (root / "bin" / DENIED).write_bytes(b"\0\1\2" + SECRET.encode() + b"\0")
    (root / "old" / DENIED).write_text(f"KEY={SECRET}\nA=1\nB=2\nC=3\nD=4\n")
    (root / "moved" / "keep.txt").write_text("keep\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first: everything")
    first = git(root, "rev-parse", "HEAD").strip()
    (root / DENIED).write_text(f"KEY={SECRET}\nMODE=prod\nEXTRA={SECRET}\n")
    (root / "a.txt").write_text("alpha\nbeta\nKEY is read from the environment\n")
    (root / "bin" / DENIED).write_bytes(b"\0\3" + SECRET.encode() + b"\0\4")
    git(root, "commit", "-q", "-am", "second: change things")
    git(root, "mv", "sub/" + DENIED, "moved/" + DENIED)  # a rename between two denied names
    git(root, "mv", "old/" + DENIED, "old/env.sample")  # a rename to a public name ...
    (root / "old" / "env.sample").write_text("KEY=changeme\nA=1\nB=2\nC=3\nD=4\n")  # ... without the secret
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "third: move things")
    (root / "sub" / DENIED).write_text(f"SUB_KEY={SECRET}\nAGAIN=1\n")  # untracked again
    (root / DENIED).write_text(f"KEY={SECRET}\nMODE=staged\n")
    git(root, "add", DENIED)  # staged
    (root / DENIED).write_text(f"KEY={SECRET}\nMODE=unstaged\n")  # and unstaged on top
    (root / "moved" / DENIED).write_text(f"SUB_KEY={SECRET}\nMOVED=1\n")
    (root / "a.txt").write_text("alpha\nbeta\ngamma\nKEY is read from the environment\n")
    os.symlink(DENIED, root / "link_to_secret")  # untracked: its target names the denied file
    env_blob = git(root, "rev-parse", "HEAD:" + DENIED).strip()
    return Repo(root, first, env_blob)


@asynccontextmanager
async def glyph_on(tmp: Path, repo: Repo, *, in_process: bool = True, rules: list[dict[str, Any]] | None = None,
                   ) -> AsyncIterator[Client]:
    config = parse_config({"roots": [str(repo.root)], "data_dir": str(tmp / "data"),
                           "rune": {"in_process": in_process}, "rules": rules or RULES}, tmp)
    async with Gateway(config) as gateway, Client(build_server(gateway), cache=None) as client:
        assert gateway.status()["servers"]["rune"]["connected"], gateway.status()
        yield client


def dump(result: types.CallToolResult) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True), ensure_ascii=False)


async def holds(client: Client, tool: str, args: dict[str, Any], *, refused: bool | None = None,
                names_path: bool = False) -> types.CallToolResult:
    """Call and check: no secret anywhere; no denied name unless the call named the path itself."""
    result = await client.call_tool(f"rune__{tool}", args)
    text = dump(result)
    assert SECRET not in text and PIECE not in text, (tool, args, text[:2000])
    if not names_path:
        assert DENIED not in text, (tool, args, text[:2000])
    if refused is not None:
        assert result.is_error == refused, (tool, args, text[:2000])
    return result


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def _structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return result.structured_content


# -- one test per tool ---------------------------------------------------------------------------


async def test_read_file(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        for path in (DENIED, "sub/.env", "./sub/../.env", "moved/.env", "link_to_secret", str(repo.root / DENIED)):
            await holds(c, "read_file", {"path": path}, refused=True, names_path=True)
        ok = await holds(c, "read_file", {"path": "a.txt"}, refused=False)
        assert "gamma" in _structured(ok)["content"]


async def test_read_many(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        await holds(c, "read_many", {"paths": ["a.txt", DENIED]}, refused=True, names_path=True)
        await holds(c, "read_many", {"paths": ["a.txt", "link_to_secret"]}, refused=True, names_path=True)
        ok = await holds(c, "read_many", {"paths": ["a.txt", "src/app.py"]}, refused=False)
        assert len(_structured(ok)["files"]) == 2


async def test_grep(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        found = await holds(c, "grep", {"pattern": "KEY", "hidden": True}, refused=False)
        assert {m["path"] for m in _structured(found)["matches"]} == {"a.txt", "old/env.sample", "src/app.py"}
        for args in ({"pattern": PIECE, "literal": True, "hidden": True, "gitignore": False},
                     {"pattern": "KEY", "path": "sub", "hidden": True},
                     {"pattern": "KEY", "path": "moved", "hidden": True, "context": 5},
                     {"pattern": ".", "hidden": True, "gitignore": False, "glob": "*env*"},
                     {"pattern": "sk-ant", "hidden": True, "gitignore": False, "max_results": 1}):
            result = await holds(c, "grep", args, refused=False)
            if args["pattern"] in (PIECE, "sk-ant"):
                assert _structured(result)["count"] == 0 and not _structured(result)["truncated"]
        await holds(c, "grep", {"pattern": "KEY", "path": DENIED}, refused=True, names_path=True)


async def test_glob(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        every = await holds(c, "glob", {"pattern": "**/*", "hidden": True, "gitignore": False}, refused=False)
        assert "old/env.sample" in _structured(every)["matches"]
        for pattern in (".env", "*env*", "**/.env", "sub/*"):
            await holds(c, "glob", {"pattern": pattern, "hidden": True, "gitignore": False}, refused=False)


async def test_list_directory(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        top = await holds(c, "list_directory", {}, refused=False)
        names = {e["name"] for e in _structured(top)["entries"]}
        assert {"a.txt", "sub", ".git"} <= names and "link_to_secret" not in names  # its target names .env
        for path in ("sub", "bin", "moved", "old"):
            await holds(c, "list_directory", {"path": path}, refused=False)


async def test_directory_tree(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        tree = await holds(c, "directory_tree", {"hidden": True, "gitignore": False, "max_depth": 10}, refused=False)
        assert "sub/notes.md" in {e["path"] for e in _structured(tree)["entries"]}


async def test_file_info(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        for path in (DENIED, "link_to_secret", "bin/.env"):
            await holds(c, "file_info", {"path": path}, refused=True, names_path=True)
        await holds(c, "file_info", {"path": "a.txt"}, refused=False)


async def test_git_status(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        status = await holds(c, "git_status", {}, refused=False)
        assert {e["path"] for e in _structured(status)["entries"]} >= {"a.txt", "link_to_secret"}
        for path in ("sub", "moved"):
            await holds(c, "git_status", {"path": path}, refused=False)


async def test_git_diff(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        for args in ({}, {"staged": True}, {"revision": "HEAD~1"}, {"revision": "HEAD~2"}, {"revision": repo.first},
                     {"revision": f"{repo.first}..HEAD"}, {"revision": "HEAD~1..HEAD"}, {"paths": ["old", "sub"]},
                     {"revision": repo.first, "context_lines": 1000}):
            result = await holds(c, "git_diff", args, refused=False)
            for f in _structured(result)["files"]:
                assert f.get("old_path") != "old/.env"
        renamed = await holds(c, "git_diff", {"revision": "HEAD~1..HEAD"}, refused=False)
        assert "+KEY=changeme" in _structured(renamed)["diff"]  # the public side of the rename is shown
        await holds(c, "git_diff", {"paths": [DENIED]}, refused=True, names_path=True)


async def test_git_show(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        for rev in ("HEAD", "HEAD~1", "HEAD~2", repo.first, "HEAD:", "HEAD:sub", "HEAD~2:sub", "HEAD:bin", ":a.txt",
                    "HEAD:moved"):
            for stat in (False, True):
                await holds(c, "git_show", {"revision": rev, "stat": stat}, refused=False)
        for rev in ("HEAD:.env", "HEAD~1:.env", "HEAD~2:sub/.env", "HEAD:./sub/../.env", ":.env", ":0:.env",
                    "HEAD:moved/.env", "HEAD:bin/.env", f"{repo.first}:old/.env"):
            await holds(c, "git_show", {"revision": rev}, refused=True, names_path=True)
        for rev in (repo.env_blob, "HEAD^{tree}", "HEAD~1^{tree}"):  # a bare object has no path to check
            await holds(c, "git_show", {"revision": rev}, refused=True)
        listed = await holds(c, "git_show", {"revision": "HEAD:"}, refused=False)
        assert _structured(listed)["output"].startswith("tree HEAD:\n\na.txt\nbin/\n")


async def test_git_log(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        log = await holds(c, "git_log", {}, refused=False)
        assert len(_structured(log)["commits"]) == 3
        await holds(c, "git_log", {"paths": [DENIED]}, refused=True, names_path=True)


async def test_git_blame(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        await holds(c, "git_blame", {"path": DENIED}, refused=True, names_path=True)
        await holds(c, "git_blame", {"path": "old/env.sample"}, refused=False)


async def test_git_branches(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        await holds(c, "git_branches", {"remotes": True}, refused=False)


async def test_git_add_and_commit(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        await holds(c, "git_add", {"paths": ["."]}, refused=False)
        staged = git(repo.root, "diff", "--cached", "--name-only")
        assert "a.txt" in staged and "link_to_secret" in staged
        assert "MODE=unstaged" not in git(repo.root, "show", ":.env")  # its change was left unstaged
        assert "sub/.env" not in staged  # the untracked denied file was not added
        await holds(c, "git_commit", {"message": "four"}, refused=False)
        await holds(c, "git_add", {"paths": [DENIED]}, refused=True, names_path=True)


async def test_write_edit_move_mkdir(tmp_path: Path, repo: Repo) -> None:
    async with glyph_on(tmp_path, repo) as c:
        await holds(c, "write_file", {"path": "sub/.env", "content": "x"}, refused=True, names_path=True)
        await holds(c, "edit_file", {"path": DENIED, "edits": [{"old_text": "KEY", "new_text": "K"}],
                                     "dry_run": True}, refused=True, names_path=True)
        await holds(c, "edit_file", {"path": "a.txt", "edits": [{"old_text": "gamma", "new_text": "GAMMA"}]},
                    refused=False)
        await holds(c, "move", {"source": "sub/.env", "destination": "sub/public.txt"}, refused=True, names_path=True)
        # A folder holding a denied file is refused as a whole (issue 21 item 5: a tool given a folder
        # acts on everything inside it); the refusal names the denied path.
        await holds(c, "move", {"source": "moved", "destination": "elsewhere"}, refused=True, names_path=True)
        await holds(c, "make_directory", {"path": "newdir/.env"}, refused=True, names_path=True)
        assert (repo.root / "moved" / DENIED).read_text().startswith("SUB_KEY=") and not (repo.root / "elsewhere").exists()


async def test_rune_subprocess_gets_the_exclusions_over_mcp(tmp_path: Path, repo: Repo) -> None:
    """`python -m rune` (Glyph's default) receives the deny globs in each call's _meta."""
    async with glyph_on(tmp_path, repo, in_process=False) as c:
        await holds(c, "grep", {"pattern": "KEY", "hidden": True}, refused=False)
        await holds(c, "git_show", {"revision": "HEAD~1"}, refused=False)
        await holds(c, "git_diff", {"revision": repo.first}, refused=False)
        await holds(c, "git_show", {"revision": "HEAD:.env"}, refused=True, names_path=True)
        await holds(c, "list_directory", {}, refused=False)


async def test_show_names_lists_the_file_but_never_its_content(tmp_path: Path, repo: Repo) -> None:
    rules = [{"tool": "*", "action": "allow"},
             {"tool": "*", "path": "**/.env", "action": "deny", "show_names": True}]
    async with glyph_on(tmp_path, repo, rules=rules) as c:
        listing = await c.call_tool("rune__list_directory", {})
        assert DENIED in {e["name"] for e in _structured(listing)["entries"]}
        glob = await c.call_tool("rune__glob", {"pattern": "**/.env", "hidden": True, "gitignore": False})
        assert "sub/.env" in _structured(glob)["matches"]
        status = await c.call_tool("rune__git_status", {})
        assert DENIED in {e["path"] for e in _structured(status)["entries"]}
        for tool, args in (("grep", {"pattern": "KEY", "hidden": True}), ("git_diff", {"revision": repo.first}),
                           ("git_show", {"revision": "HEAD~1"}), ("git_show", {"revision": "HEAD:.env"}),
                           ("read_file", {"path": DENIED})):
            result = await c.call_tool(f"rune__{tool}", args)
            text = dump(result)
            assert SECRET not in text, (tool, args)
            if tool in ("grep", "git_diff", "git_show") and "HEAD:" not in args.get("revision", ""):
                assert DENIED not in text, (tool, args)  # a diff or a match is content: left out whole


# -- Glyph's own check, for servers that do not apply the exclusions --------------------------------


def leaky_server() -> FakeServer:
    fake = FakeServer()
    fake.tools["listing"] = types.Tool(name="listing", input_schema={"type": "object", "properties": {}})
    fake.tools["patch"] = types.Tool(name="patch", input_schema={"type": "object", "properties": {}})
    fake.tools["search"] = types.Tool(name="search", input_schema={"type": "object", "properties": {}})
    answers = {
        "listing": {"path": "sub", "entries": [{"name": "notes.md"}, {"name": DENIED}]},
        "patch": {"repo": ".", "diff": "diff --git a/x.txt b/x.txt\n+1\ndiff --git a/sub/.env b/sub/.env\n+KEY=1\n"},
        "search": {"matches": [{"path": "src/app.py", "line": 1, "text": "load_dotenv('.env')"}]},
    }
    original = fake._call

    async def call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name in answers:
            data = answers[params.name]
            return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(data))],
                                        structured_content=data)
        return await original(ctx, params)

    fake.server = type(fake.server)("fake", version="1.0", on_list_tools=fake._list, on_call_tool=call)
    return fake


async def test_glyph_withholds_a_result_that_names_a_denied_path(tmp_path: Path) -> None:
    from tests.glyph.conftest import make_config, rig

    config = make_config(tmp_path, rules=RULES)
    async with rig(config, fake=leaky_server()) as r:
        for tool in ("fake__listing", "fake__patch"):
            result = await r.call(tool)
            assert result.is_error and "withheld" in r.text(result) and DENIED not in dump(result), tool
            row = r.last_audit()
            assert (row["decision"], row["outcome"]) == ("allow", "withheld")
        search = await r.call("fake__search")  # ".env" in a matched line is content, not a name
        assert not search.is_error
