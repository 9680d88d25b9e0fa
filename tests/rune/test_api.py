"""The Python API Glyph builds on: construction, the registry, call(), errors, closing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rune import Rune, RuneError, ToolSpec
from tests.rune.conftest import World


async def test_call_and_specs(rune: Rune, world: World) -> None:
    assert rune.roots == (str(world.root),)
    assert rune.grep_engine in ("ripgrep", "python")
    spec = rune.tool("edit_file")
    assert isinstance(spec, ToolSpec) and spec.annotations.destructive and not spec.annotations.read_only
    wire = spec.to_mcp()
    assert set(wire) == {"name", "title", "description", "inputSchema", "outputSchema", "annotations"}
    assert wire["annotations"] == {"title": "Edit file", "readOnlyHint": False, "destructiveHint": True,
                                   "idempotentHint": False, "openWorldHint": False}
    wire["inputSchema"]["properties"].clear()  # a copy: the registry is untouched
    assert spec.input_schema["properties"]
    result = await rune.call("read_file", {"path": "inside.txt"})
    assert result["content"] == "inside\n"


async def test_errors_carry_stable_codes(rune: Rune) -> None:
    with pytest.raises(RuneError) as err:
        await rune.call("no_such_tool", {})
    assert err.value.code == "unknown_tool" and str(err.value).startswith("unknown_tool: ")
    with pytest.raises(RuneError) as err:
        await rune.call("read_file", {"path": "inside.txt", "typo": 1})
    assert err.value.code == "invalid_arguments" and "typo" in err.value.message
    with pytest.raises(RuneError) as err:
        await rune.call("grep", {"pattern": "x", "context": 99})
    assert err.value.code == "invalid_arguments" and "context" in err.value.message


async def test_defaults_do_not_leak_between_calls(rune: Rune) -> None:
    spec = rune.tool("git_diff")
    before = repr(spec.input_schema)
    with pytest.raises(RuneError):
        await rune.call("git_diff", {})  # no repository here, but the defaults were applied
    assert repr(spec.input_schema) == before


async def test_concurrent_calls(rune: Rune, world: World) -> None:
    writes = [rune.call("write_file", {"path": f"many/{i}.txt", "content": f"{i}\n"}) for i in range(30)]
    await asyncio.gather(*writes)
    reads = await asyncio.gather(*(rune.call("read_file", {"path": f"many/{i}.txt"}) for i in range(30)))
    assert [r["content"] for r in reads] == [f"{i}\n" for i in range(30)]


async def test_dotdot_escape_creates_nothing(rune: Rune, world: World) -> None:
    with pytest.raises(RuneError) as err:
        await rune.call("make_directory", {"path": "x/../../y"})
    assert err.value.code == "outside_roots"
    assert not (world.root / "x").exists()
    world.untouched()


def test_closed_rune_refuses(world: World) -> None:
    rune = Rune(str(world.root))  # a single root as a plain string is accepted too
    rune.close()
    rune.close()  # idempotent
    with pytest.raises(RuneError) as err:
        asyncio.run(rune.call("read_file", {"path": "inside.txt"}))
    assert err.value.code == "unavailable"


def test_roots_must_be_directories(tmp_path: Path) -> None:
    with pytest.raises(RuneError) as err:
        Rune([tmp_path / "missing"])
    assert err.value.code == "not_found"
