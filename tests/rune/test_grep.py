"""grep and glob, run against both engines; the engines must agree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rune import Rune, RuneError
from tests.rune.conftest import ENGINES, RG


def _tree(root: Path) -> None:
    files = {
        "a.py": "import os\ndef alpha():\n    return 'TODO one'\n",
        "b.txt": "nothing here\n",
        "ctx.txt": "l1\nl2\nhit A\nl4\nhit B\nl6\nl7\nl8\nhit C\n",
        "pkg/mod.py": "# TODO two\nx = a.b(1)\n",
        "pkg/deep/z.py": "TODO three\n",
        "build/out.py": "TODO ignored by .gitignore\n",
        "logs/x.log": "TODO ignored log\n",
        ".hidden/h.py": "TODO hidden\n",
        ".env": "TODO dotfile\n",
        "CaseFile.md": "Todo Mixed\n",
        "dash.txt": "-v is not an option\n",
    }
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / "pkg" / ".ignore").write_text("deep/skip.py\n")
    (root / "pkg" / "deep" / "skip.py").write_text("TODO skipped by .ignore\n")
    (root / "blob.bin").write_bytes(b"TODO\x00binary")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("TODO in .git\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    _tree(root)
    return root


@pytest.fixture(params=ENGINES)
async def rune(request: pytest.FixtureRequest, tree: Path) -> AsyncIterator[Rune]:
    async with Rune([tree], ripgrep=request.param == "ripgrep") as r:
        assert r.grep_engine == request.param
        yield r


def _hits(result: dict[str, Any]) -> list[tuple[str, int]]:
    return [(m["path"], m["line"]) for m in result["matches"]]


async def test_regex_gitignore_binary_hidden(rune: Rune) -> None:
    r = await rune.call("grep", {"pattern": "TODO"})
    assert _hits(r) == [("a.py", 3), ("pkg/deep/z.py", 1), ("pkg/mod.py", 1)]
    assert r["matches"][0]["text"] == "    return 'TODO one'" and r["engine"] == rune.grep_engine
    assert not r["truncated"] and r["count"] == 3


async def test_hidden_and_no_gitignore(rune: Rune) -> None:
    r = await rune.call("grep", {"pattern": "TODO", "hidden": True})
    assert {p for p, _ in _hits(r)} == {"a.py", "pkg/deep/z.py", "pkg/mod.py", ".hidden/h.py", ".env"}
    r = await rune.call("grep", {"pattern": "TODO", "gitignore": False})
    assert {p for p, _ in _hits(r)} == {"a.py", "pkg/deep/z.py", "pkg/mod.py", "build/out.py", "logs/x.log", "pkg/deep/skip.py"}


async def test_literal_case_and_leading_dash(rune: Rune) -> None:
    assert _hits(await rune.call("grep", {"pattern": "a.b(", "literal": True})) == [("pkg/mod.py", 2)]
    with pytest.raises(RuneError) as err:
        await rune.call("grep", {"pattern": "a.b("})
    assert err.value.code == "invalid_arguments"
    assert _hits(await rune.call("grep", {"pattern": "todo mixed", "ignore_case": True})) == [("CaseFile.md", 1)]
    assert _hits(await rune.call("grep", {"pattern": "-v"})) == [("dash.txt", 1)]
    assert _hits(await rune.call("grep", {"pattern": "--files"})) == []


async def test_context_lines(rune: Rune) -> None:
    r = await rune.call("grep", {"pattern": "^hit", "context": 1, "glob": "ctx.txt"})
    a, b, c = r["matches"]
    assert (a["line"], a["before"], a["after"]) == (3, [{"line": 2, "text": "l2"}], [{"line": 4, "text": "l4"}])
    assert (b["line"], b["before"], b["after"]) == (5, [{"line": 4, "text": "l4"}], [{"line": 6, "text": "l6"}])
    assert (c["line"], c["before"], c["after"]) == (9, [{"line": 8, "text": "l8"}], [])
    r2 = await rune.call("grep", {"pattern": "^hit", "context": 2, "glob": "ctx.txt"})
    b = r2["matches"][1]
    assert [x["line"] for x in b["before"]] == [4] and [x["line"] for x in b["after"]] == [6, 7]


async def test_single_file_and_glob_filter(rune: Rune) -> None:
    assert _hits(await rune.call("grep", {"pattern": "hit", "path": "ctx.txt"})) == [("ctx.txt", 3), ("ctx.txt", 5), ("ctx.txt", 9)]
    assert _hits(await rune.call("grep", {"pattern": "TODO", "glob": "*.py"})) == [("a.py", 3), ("pkg/deep/z.py", 1), ("pkg/mod.py", 1)]
    assert _hits(await rune.call("grep", {"pattern": "TODO", "glob": "pkg/*.py"})) == [("pkg/mod.py", 1)]
    # a glob never overrides .gitignore (rg's own -g would)
    assert _hits(await rune.call("grep", {"pattern": "TODO", "glob": "*.log"})) == []
    assert _hits(await rune.call("grep", {"pattern": "TODO", "path": "pkg"})) == [("pkg/deep/z.py", 1), ("pkg/mod.py", 1)]


async def test_max_results(rune: Rune) -> None:
    r = await rune.call("grep", {"pattern": "l|hit", "glob": "ctx.txt", "max_results": 4})
    assert r["truncated"] and r["count"] == 4
    r = await rune.call("grep", {"pattern": "hit", "glob": "ctx.txt", "max_results": 3})
    assert not r["truncated"] and r["count"] == 3


async def test_glob(rune: Rune) -> None:
    g = lambda **kw: rune.call("glob", kw)  # noqa: E731
    assert (await g(pattern="*.py"))["matches"] == ["a.py", "pkg/deep/z.py", "pkg/mod.py"]
    assert (await g(pattern="pkg/*.py"))["matches"] == ["pkg/mod.py"]
    assert (await g(pattern="**/deep/*.py"))["matches"] == ["pkg/deep/z.py"]
    assert (await g(pattern="*.py", path="pkg"))["matches"] == ["pkg/deep/z.py", "pkg/mod.py"]
    assert (await g(pattern="*.py", hidden=True))["matches"] == [".hidden/h.py", "a.py", "pkg/deep/z.py", "pkg/mod.py"]
    assert "build/out.py" in (await g(pattern="*.py", gitignore=False))["matches"]
    r = await g(pattern="*", max_results=2)
    assert r["truncated"] and r["matches"] == ["CaseFile.md", "a.py"]
    with pytest.raises(RuneError):
        await g(pattern="!*.py")
    with pytest.raises(RuneError) as err:
        await g(pattern="*", path="a.py")
    assert err.value.code == "not_a_directory"


@pytest.mark.skipif(RG is None, reason="no rg binary")
@pytest.mark.parametrize(
    "args",
    [
        {"pattern": "TODO"},
        {"pattern": "TODO", "hidden": True, "gitignore": False},
        {"pattern": "^hit|l[0-9]", "context": 2},
        {"pattern": "todo", "ignore_case": True, "glob": "*.py"},
        {"pattern": r"\bx\b", "path": "pkg"},
    ],
)
async def test_engines_agree(tree: Path, args: dict[str, Any]) -> None:
    async with Rune([tree], ripgrep=True) as fast, Rune([tree], ripgrep=False) as slow:
        a, b = await fast.call("grep", args), await slow.call("grep", args)
        assert a["matches"] == b["matches"]
        ga = await fast.call("glob", {"pattern": "**", "hidden": args.get("hidden", False)})
        gb = await slow.call("glob", {"pattern": "**", "hidden": args.get("hidden", False)})
        assert ga["matches"] == gb["matches"]


async def test_long_lines_are_clipped(rune: Rune, tree: Path) -> None:
    (tree / "min.js").write_text("x" * 5000 + "NEEDLE" + "y" * 5000 + "\n")
    m = (await rune.call("grep", {"pattern": "NEEDLE"}))["matches"][0]
    assert len(m["text"]) == 1001 and m["text"].endswith("…")
