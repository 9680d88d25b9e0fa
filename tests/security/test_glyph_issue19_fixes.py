"""Issue 19's last paragraph: two Glyph fixes, each run as the user runs Glyph.

1. Under `glyph serve --http` with no one to ask, the denial said "under stdio, stdin and
   stdout carry MCP": untrue there, and the model repeats it to the user.
2. A client closing Glyph (an editor quitting: its pipes close while an answer is on its
   way) printed a BrokenPipe traceback, from Glyph's and Rune's stdio writers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client

from glyph.downstream import http_transport
from tests.security.glyph_util import REPO, RawClient, glyph_env, spawn_glyph, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    with anyio.fail_after(timeout_s):
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                return
            except OSError:
                await anyio.sleep(0.05)  # polling an observable condition, with a deadline


@pytest.mark.parametrize(("prompt", "says"), [
    ("auto", "serves HTTP with no consent prompt"),
    ("deny", "consent prompts turned off (--prompt deny)"),
])
async def test_no_one_to_ask_under_http_does_not_claim_stdio(tmp_path: Path, prompt: str, says: str) -> None:
    config = write_config(tmp_path)
    (tmp_path / "root" / "a.txt").write_text("a\n")
    port = free_port()
    env = {**glyph_env(tmp_path), "GLYPH_HTTP_TOKEN": "t0ken-for-this-test"}
    proc = spawn_glyph(config, env, "--http", "--port", str(port), "--prompt", prompt)
    try:
        await wait_listening(port, proc)
        transport = http_transport(f"http://127.0.0.1:{port}/mcp", {"Authorization": "Bearer t0ken-for-this-test"})
        async with Client(transport, cache=None) as client:
            result = await client.call_tool("rune__write_file", {"path": "b.txt", "content": "b"})
        text = " ".join(getattr(c, "text", "") for c in result.content)
        assert result.is_error and "no one could be asked" in text
        assert "stdio" not in text and says in text, text
        assert not (tmp_path / "root" / "b.txt").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def close_mid_answer(proc: subprocess.Popen[bytes], client: RawClient, call: tuple[str, dict[str, object]]) -> str:
    """The editor sends a call and quits at once: both pipes close while the answer is on its way."""
    client.request("tools/list")
    client.call(*call)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.close()
    proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace")
    proc.wait(timeout=60)
    return err


def test_glyph_stdio_closed_by_its_client_exits_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "root" / "a.txt").write_text("a\n" * 1000)
    for _ in range(3):  # the pipe may close before or after the answer is written: try a few times
        proc = spawn_glyph(config, glyph_env(tmp_path), "--prompt", "deny")
        client = RawClient(proc)
        client.initialize()
        err = close_mid_answer(proc, client, ("rune__read_file", {"path": "a.txt"}))
        assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err, err
        assert proc.returncode == 0, err


def test_rune_stdio_closed_by_its_client_exits_without_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n" * 1000)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "rune", "--root", str(root)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO),
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        client = RawClient(proc)
        client.initialize()
        err = close_mid_answer(proc, client, ("read_file", {"path": "a.txt"}))
        assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err, err
        assert proc.returncode == 0, err
