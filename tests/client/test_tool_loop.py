"""The tool loop end to end: a scripted upstream asks for a tool, OMEN routes, the kit carries
the call to Glyph (a real `glyph serve` over stdio, with Rune as its subprocess on a temp
directory), Glyph's policy decides, the result goes back to the model. Then the same with
OMEN down (the fake Ollama scripted with the tool call)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from glyph.cli import main as glyph_main
from glyph.config import load_config
from glyph.consent import DenyPrompter
from glyph.gateway import Gateway
from glyph.server import build_server
from omen_local.client import AsyncOmenClient
from omen_local.client.tools import GlyphTools, run_tool_loop
from tests.conftest import Stack
from tests.fakes.base import FakeServer, Reply
from tests.fakes.fake_ollama import FakeOllama

EDIT = json.dumps({"path": "notes.txt", "edits": [{"old_text": "helo", "new_text": "hello"}]})
ASK = [{"role": "user", "content": "Fix the typo in notes.txt"}]


def glyph_setup(tmp_path: Path, action: str, *, rune_in_process: bool = False) -> tuple[Path, Path]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "notes.txt").write_text("helo world\n")
    cfg = tmp_path / "glyph.json"
    cfg.write_text(json.dumps({
        "roots": [str(root)],
        "data_dir": str(tmp_path / "glyph-data"),
        "rules": [{"server": "rune", "tool": "edit_file", "action": action}],
        "rune": {"in_process": rune_in_process},
    }))
    return root, cfg


def audit_rows(cfg: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert glyph_main(["audit", "--config", str(cfg), "--json", "--limit", "0"]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def tool_message(fake: FakeServer) -> dict[str, Any]:
    """The tool result the model received with its second turn."""
    messages = fake.seen[-1].body["messages"]
    assert messages[-2]["role"] == "assistant" and messages[-2]["tool_calls"][0]["function"]["name"] == "rune__edit_file"
    msg = messages[-1]
    assert msg["role"] == "tool" and msg["tool_call_id"] == messages[-2]["tool_calls"][0]["id"]
    return msg  # type: ignore[no-any-return]


def check(action: str, root: Path, cfg: Path, result: Any, fake: FakeServer) -> None:
    calls = [r for r in audit_rows(cfg) if r["kind"] == "call"]
    assert [(r["server"], r["tool"], r["decision"]) for r in calls] == [("rune", "edit_file", action)]
    assert calls[0]["client"].startswith("omen-client/")
    content = tool_message(fake)["content"]
    assert result.rounds == 2 and not result.round_limit_hit and len(result.tool_results) == 1
    if action == "allow":
        assert (root / "notes.txt").read_text() == "hello world\n"
        assert not result.tool_results[0].is_error and "notes.txt" in content
    else:
        assert (root / "notes.txt").read_text() == "helo world\n"
        assert result.tool_results[0].is_error and "Denied by Glyph policy" in content
    assert result.answer.text == "All done."
    assert audit_rows(cfg) and glyph_main(["audit", "--config", str(cfg), "--verify"]) == 0


@pytest.mark.parametrize("action", ["allow", "deny"])
async def test_tool_loop_through_omen_glyph_and_rune(stack: Stack, tmp_path: Path, action: str) -> None:
    root, cfg = glyph_setup(tmp_path, action)
    stack.openai.queue(
        Reply(text="", tool_calls=[("rune__edit_file", EDIT)], finish_reason="tool_calls"),
        Reply(text="All done."),
    )
    tools_seen: list[tuple[str, bool]] = []
    async with AsyncOmenClient(config=stack.data_dir.parent / "config.toml", environ={}) as omen, \
            GlyphTools.stdio(cfg, prompt="deny") as glyph:
        assert "rune__edit_file" in {t["function"]["name"] for t in glyph.openai_tools()}
        result = await run_tool_loop(omen, glyph, ASK, model="openai/gpt-4o-mini",
                                     on_tool=lambda call, done: tools_seen.append((call.name, done is None)))
    assert not result.answer.degraded and result.answer.route.provider == "openai"
    assert tools_seen == [("rune__edit_file", True), ("rune__edit_file", False)]
    first = stack.openai.seen[0].body
    assert {t["function"]["name"] for t in first["tools"]} >= {"rune__edit_file", "rune__read_file"}
    check(action, root, cfg, result, stack.openai)


@pytest.mark.parametrize("action", ["allow", "deny"])
async def test_tool_loop_in_degraded_mode(tmp_path: Path, action: str) -> None:
    root, cfg = glyph_setup(tmp_path, action, rune_in_process=True)  # Glyph over stdio still
    async with FakeOllama() as ollama:
        ollama.queue(Reply(text="", tool_calls=[("rune__edit_file", EDIT)]), Reply(text="All done."))
        omen_cfg = tmp_path / "omen.toml"
        omen_cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "omen-data"}"\n'
                            f'[providers.ollama]\nbase_url = "{ollama.url}"\n')
        async with AsyncOmenClient(config=omen_cfg, environ={}) as omen, GlyphTools.stdio(cfg, prompt="deny") as glyph:
            result = await run_tool_loop(omen, glyph, ASK, model="auto-code")
        assert result.answer.degraded and result.answer.banner
        assert [s.path for s in ollama.seen] == ["/v1/chat/completions"] * 2  # the OpenAI-compatible API
        check(action, root, cfg, result, ollama)


async def test_round_limit_and_bad_arguments_go_back_to_the_model(stack: Stack, tmp_path: Path) -> None:
    _, cfg = glyph_setup(tmp_path, "allow", rune_in_process=True)
    again = Reply(text="", tool_calls=[("rune__edit_file", "{not json")], finish_reason="tool_calls")
    stack.openai.queue(again, again, again)
    gateway = Gateway(load_config(cfg), DenyPrompter())  # Glyph in this process: any MCP server will do
    async with gateway, AsyncOmenClient(config=stack.data_dir.parent / "config.toml", environ={}) as omen, \
            GlyphTools(build_server(gateway)) as glyph:
        result = await run_tool_loop(omen, glyph, ASK, model="openai/gpt-4o-mini", max_rounds=2)
    assert result.round_limit_hit and result.rounds == 2 and len(stack.openai.seen) == 2
    assert all(r.is_error and "not valid JSON" in r.content for r in result.tool_results)
    assert [r for r in audit_rows(cfg) if r["kind"] == "call"] == []  # never reached Glyph's tools


async def test_tool_loop_over_glyph_http(tmp_path: Path) -> None:
    """`glyph serve --http` with a bearer token (the tray app's way of running Glyph)."""
    root, cfg = glyph_setup(tmp_path, "allow", rune_in_process=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "glyph", "serve", "--http", "--port", str(port), "--config", str(cfg),
        "--prompt", "deny", env={**os.environ, "GLYPH_HTTP_TOKEN": "glyph-secret"},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        async with FakeOllama() as ollama:
            ollama.queue(Reply(text="", tool_calls=[("rune__edit_file", EDIT)]), Reply(text="All done."))
            omen_cfg = tmp_path / "omen.toml"
            omen_cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "omen-data"}"\n'
                                f'[providers.ollama]\nbase_url = "{ollama.url}"\n')
            url = f"http://127.0.0.1:{port}/mcp"
            async with AsyncOmenClient(config=omen_cfg, environ={}) as omen, GlyphTools.http(url, "glyph-secret") as glyph:
                result = await run_tool_loop(omen, glyph, ASK)
            check("allow", root, cfg, result, ollama)
    finally:
        proc.terminate()
        await proc.wait()
