"""Rune through the official MCP client, as an editor would use it: in memory, over stdio and
over Streamable HTTP. Every tool is called once and its structuredContent checked against the
outputSchema it advertised."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from rune import Rune
from rune.server import build_server
from rune.tools import TOOLS

PROJECT = Path(__file__).resolve().parents[2]
READ_ONLY = {"read_file", "read_many", "list_directory", "directory_tree", "file_info", "grep", "glob",
             "git_status", "git_diff", "git_log", "git_show", "git_blame", "git_branches"}

# One call per tool, in an order that works on the `repo` fixture.
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("read_file", {"path": "a.txt", "head": 1}),
    ("read_many", {"paths": ["a.txt", "missing.txt"]}),
    ("list_directory", {}),
    ("directory_tree", {"max_depth": 2}),
    ("file_info", {"path": "a.txt"}),
    ("grep", {"pattern": "alpha", "context": 1}),
    ("glob", {"pattern": "**/*.py"}),
    ("write_file", {"path": "notes/n.txt", "content": "one\n"}),
    ("edit_file", {"path": "notes/n.txt", "edits": [{"old_text": "one", "new_text": "two"}]}),
    ("make_directory", {"path": "made"}),
    ("move", {"source": "notes/n.txt", "destination": "made/n.txt"}),
    ("git_status", {}),
    ("git_diff", {"revision": "HEAD~1"}),
    ("git_add", {"paths": ["made/n.txt"]}),
    ("git_commit", {"message": "via mcp"}),
    ("git_log", {"max_count": 2}),
    ("git_show", {"stat": True}),
    ("git_blame", {"path": "a.txt"}),
    ("git_branches", {}),
]


def test_registry() -> None:
    with Rune([PROJECT]) as rune:
        names = [t.name for t in rune.tools]
    assert sorted(names) == sorted(n for n, _ in CALLS) and len(set(names)) == 19
    for spec in TOOLS:
        jsonschema.Draft202012Validator.check_schema(spec.input_schema)
        jsonschema.Draft202012Validator.check_schema(spec.output_schema)
        assert spec.input_schema["type"] == spec.output_schema["type"] == "object"
        assert spec.annotations.read_only == (spec.name in READ_ONLY), spec.name
        assert spec.annotations.open_world is False


@pytest.fixture
async def rune(repo: Path) -> AsyncIterator[Rune]:
    async with Rune([repo], git_identity=("Rune Test", "rune@example.com")) as r:
        yield r


async def _check_listing(client: Client, rune: Rune) -> dict[str, dict[str, Any]]:
    listed = await client.list_tools()
    assert [t.name for t in listed.tools] == [t.name for t in rune.tools]
    schemas = {}
    for tool in listed.tools:
        wire = tool.model_dump(by_alias=True, exclude_none=True)
        assert wire["inputSchema"]["type"] == "object" and wire["outputSchema"]["type"] == "object"
        hints = wire["annotations"]
        assert set(hints) >= {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}
        assert hints["readOnlyHint"] == (tool.name in READ_ONLY)
        assert tool.description
        schemas[tool.name] = wire["outputSchema"]
    return schemas


async def _check_calls(client: Client, schemas: dict[str, dict[str, Any]]) -> None:
    for name, args in CALLS:
        result = await client.call_tool(name, args)  # the client itself validates structuredContent
        assert not result.is_error, (name, result.content)
        jsonschema.validate(result.structured_content, schemas[name])
        assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_in_memory_client(rune: Rune, mode: str) -> None:
    async with Client(build_server(rune), mode=mode) as client:
        schemas = await _check_listing(client, rune)
        await _check_calls(client, schemas)
        # a refusal is a tool error the model can read, not a protocol error
        result = await client.call_tool("read_file", {"path": "../../etc/passwd"})
        assert result.is_error and result.content[0].text.startswith("outside_roots")  # type: ignore[union-attr]
        result = await client.call_tool("read_file", {"paht": "a.txt"})
        assert result.is_error and "invalid_arguments" in result.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError):
            await client.call_tool("rm_rf", {})


async def test_stdio_client(repo: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "rune", "--root", str(repo)], cwd=str(PROJECT),
        env={"PYTHONPATH": str(PROJECT)},
    )
    async with Client(params) as client:
        listed = await client.list_tools()
        assert len(listed.tools) == 19
        result = await client.call_tool("grep", {"pattern": "gamma"})
        assert result.structured_content["matches"][0]["path"] == "a.txt"  # type: ignore[index]
        result = await client.call_tool("write_file", {"path": "../escaped.txt", "content": "x"})
        assert result.is_error
    assert not (repo.parent / "escaped.txt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post_without_token(url: str) -> int:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_streamable_http_client(repo: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "RUNE_HTTP_TOKEN": "s3cret"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rune", "--root", str(repo), "--http", str(port), cwd=PROJECT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_post_without_token, url) == 401
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as http, \
                Client(streamable_http_client(url, http_client=http)) as client:
            assert len((await client.list_tools()).tools) == 19
            result = await client.call_tool("git_log", {"max_count": 1})
            assert result.structured_content["commits"][0]["subject"] == "second"  # type: ignore[index]
            result = await client.call_tool("list_directory", {"path": str(repo.parent)})
            assert result.is_error
    finally:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), 10)


def test_cli_refuses_a_missing_root(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "rune", "--root", str(tmp_path / "missing")], cwd=PROJECT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "not_found" in out.stderr
