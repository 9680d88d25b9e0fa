"""The real Rune behind Glyph: as the built-in subprocess (`python -m rune --root R`) and in-process.

Rune's own escape table lives in tests/rune/; here Glyph's side: the tools arrive namespaced,
calls go through, and a path outside the roots is refused by Glyph before Rune sees it.
"""

from __future__ import annotations

import json
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from glyph.config import parse_config
from glyph.consent import Scope
from glyph.gateway import Gateway
from glyph.server import build_server
from tests.glyph.conftest import ScriptedPrompter

pytest.importorskip("rune.server")


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("in_process", [False, True], ids=["subprocess", "in-process"])
async def test_rune_through_glyph(tmp_path: Path, in_process: bool) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "hello.txt").write_text("hello from rune\n")
    (tmp_path / "secret.txt").write_text("not yours\n")
    config = parse_config({
        "roots": [str(root)], "data_dir": str(tmp_path / "data"),
        "rune": {"in_process": in_process},
        "consent": {"auto_allow_read_only": True},
    }, tmp_path)
    prompter = ScriptedPrompter(Scope.ONCE)
    async with Gateway(config, prompter) as gateway, Client(build_server(gateway), cache=None) as client:
        assert gateway.status()["servers"]["rune"]["connected"], gateway.status()
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"rune__read_file", "rune__write_file", "rune__grep"} <= set(tools)

        read = await client.call_tool("rune__read_file", {"path": "hello.txt"})
        assert not read.is_error, text(read)
        assert "hello from rune" in json.dumps(read.structured_content)
        assert prompter.requests == []  # read-only, inside the roots, auto-allow enabled

        escape = await client.call_tool("rune__read_file", {"path": "../secret.txt"})
        assert escape.is_error and "outside the roots" in text(escape)

        written = await client.call_tool("rune__write_file", {"path": "new.txt", "content": "x\n"})
        assert not written.is_error, text(written)
        assert len(prompter.requests) == 1 and prompter.requests[0].tool == "write_file"
        assert (root / "new.txt").read_text() == "x\n"
        assert gateway.audit.verify().ok
