"""`glyph serve` as a real process: an editor's SDK client over stdio and over HTTP, with the
downstream server proxied over stdio and over Streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
import pytest
import uvicorn
from mcp import Client, StdioServerParameters

from glyph.cli import main
from glyph.downstream import http_transport
from tests.glyph.fake_server import FakeServer
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_server.py"
EDITOR = types.Implementation(name="stdio-editor", version="2")


def write_config(tmp_path: Path, server: dict[str, object]) -> Path:
    (tmp_path / "root").mkdir(exist_ok=True)
    cfg = tmp_path / "glyph.json"
    cfg.write_text(json.dumps({
        "roots": [str(tmp_path / "root")],
        "data_dir": str(tmp_path / "data"),
        "rune": {"enabled": False},
        "rules": [{"server": "fake", "tool": "read_file", "action": "allow"}],
        "mcpServers": {"fake": server},
    }))
    return cfg


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_stdio_editor_to_glyph_to_stdio_downstream(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    cfg = write_config(tmp_path, {"command": sys.executable, "args": [str(FAKE)],
                                  "env": {"FAKE_CALL_LOG": str(calls)}})
    glyph = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                  args=["-m", "glyph", "serve", "--config", str(cfg), "--prompt", "deny"])
    async with Client(glyph, client_info=EDITOR, cache=None) as client:
        assert client.server_info is not None and client.server_info.name == "glyph"
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"fake__read_file", "fake__write_file"} <= names

        allowed = await client.call_tool("fake__read_file", {"path": "notes.txt"})
        assert not allowed.is_error and allowed.structured_content == {
            "path": "notes.txt", "text": "contents of notes.txt"}

        denied = await client.call_tool("fake__write_file", {"path": "notes.txt", "content": "x"})
        assert denied.is_error and "no one could be asked" in text(denied)  # nobody to ask: fail closed

        invalid = await client.call_tool("fake__read_file", {"path": 3})
        assert invalid.is_error and "Invalid arguments" in text(invalid)

    assert [json.loads(line)[0] for line in calls.read_text().splitlines()] == ["read_file"]
    with_calls = [r for r in _audit_rows(cfg) if r["kind"] == "call"]
    assert [(r["tool"], r["decision"], r["decided_by"]) for r in with_calls] == [
        ("read_file", "allow", "policy:rule 1 (allow fake/read_file)"),
        ("write_file", "deny", "fail-closed:no-prompter:deny"),
        ("read_file", "deny", "schema"),
    ]
    assert {r["client"] for r in with_calls} == {"stdio-editor/2"}
    assert main(["audit", "--config", str(cfg), "--verify"]) == 0


def _audit_rows(cfg: Path) -> list[dict[str, object]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "--config", str(cfg), "--json", "--limit", "0"]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@asynccontextmanager
async def http_downstream() -> AsyncIterator[tuple[str, FakeServer]]:
    """The fake server over Streamable HTTP on 127.0.0.1, in this test's loop."""
    fake = FakeServer()
    sock = _free_socket()
    app = fake.server.streamable_http_app(host="127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        await until(lambda: server.started, "uvicorn to start")
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", fake
        finally:
            server.should_exit = True


async def test_http_editor_to_glyph_to_http_downstream(tmp_path: Path) -> None:
    async with http_downstream() as (url, fake):
        cfg = write_config(tmp_path, {"url": url, "headers": {"X-Test": "1"}})
        probe = _free_socket()
        port = probe.getsockname()[1]
        probe.close()
        args = [sys.executable, "-m", "glyph", "serve", "--config", str(cfg), "--http", "--port", str(port),
                "--prompt", "deny"]
        env = {**os.environ, "GLYPH_HTTP_TOKEN": "tok3n"}
        async with await anyio.open_process(args, cwd=str(ROOT), env=env) as process:
            try:
                with anyio.fail_after(20):
                    while True:
                        try:
                            await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                            break
                        except OSError:
                            await anyio.sleep(0.05)
                url = f"http://127.0.0.1:{port}/mcp"
                async with httpx2.AsyncClient() as http:
                    assert (await http.post(url, json={})).status_code == 401  # no token, no tools
                transport = http_transport(url, {"Authorization": "Bearer tok3n"})
                async with Client(transport, client_info=EDITOR, cache=None) as client:
                    assert "fake__read_file" in {t.name for t in (await client.list_tools()).tools}
                    result = await client.call_tool("fake__read_file", {"path": "a.md"})
                    assert not result.is_error and result.structured_content is not None
                    denied = await client.call_tool("fake__status", {})
                    assert denied.is_error
            finally:
                process.terminate()
                await process.wait()
        assert fake.calls == [("read_file", {"path": "a.md"})]


async def test_downstream_failures_are_isolated_and_reconnected(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from glyph import downstream
    from glyph.config import parse_config
    from glyph.gateway import Gateway

    monkeypatch.setattr(downstream, "RECONNECT_EVERY_S", 0.0)
    config = parse_config({
        "roots": [str(tmp_path)], "data_dir": str(tmp_path / "data"), "rune": {"enabled": False},
        "rules": [{"action": "allow"}], "connect_timeout_s": 10,
        "mcpServers": {
            "fake": {"command": sys.executable, "args": [str(FAKE)], "env": {"FAKE_ALLOW_CRASH": "1"}},
            "broken": {"command": str(tmp_path / "no-such-server")},
        },
    }, tmp_path)
    async with Gateway(config) as gateway:
        status = gateway.status()["servers"]
        assert status["fake"]["connected"] and not status["broken"]["connected"] and status["broken"]["error"]
        assert not (await gateway.call("fake__status", {})).is_error

        crashed = await gateway.call("fake__crash", {})
        assert crashed.is_error and gateway.audit.rows(1)[0]["outcome"] == "downstream_error"

        again = await gateway.call("fake__status", {})  # a fresh process behind the same name
        assert not again.is_error, text(again)
        assert gateway.status()["servers"]["fake"]["connected"]
