"""With real processes: `omen serve` stopped, killed and started again on the same port while
the kit keeps answering (degraded from the fake Ollama, then from OMEN again by itself), and
`omen ask` run the way a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from omen_local import endpoint
from omen_local.client import AsyncOmenClient
from tests.fakes.base import Reply
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI

MSG = [{"role": "user", "content": "What is the capital of France?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    ollama: FakeOllama
    openai: FakeOpenAI
    config: Path
    data_dir: Path
    env: dict[str, str]
    port: int
    proc: asyncio.subprocess.Process | None = None

    async def start_omen(self) -> int:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "omen_local", "serve", "--config", str(self.config), env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        path = endpoint.path_for(self.data_dir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = endpoint.read(path)
            if info is not None and info.pid == self.proc.pid:
                return self.proc.pid
            if self.proc.returncode is not None:
                raise AssertionError(f"omen serve exited with {self.proc.returncode}")
            await asyncio.sleep(0.05)
        raise AssertionError("omen serve did not publish its endpoint in 20 s")

    async def stop_omen(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 15)

    async def ask(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "omen_local", "ask", *args, "--config", str(self.config), env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeOllama() as ollama, FakeOpenAI() as oai:
        port = free_port()
        data_dir = tmp_path / "data"
        config = tmp_path / "config.toml"
        config.write_text(f"""
[server]
port = {port}
[storage]
data_dir = "{data_dir}"
[defaults]
health_interval_s = 3600
[providers.ollama]
base_url = "{ollama.url}"
[providers.openai]
base_url = "{oai.url}/v1"
key = ["env:FAKE_OPENAI_KEY"]
[providers.anthropic]
enabled = false
[intents]
chat = ["openai/gpt-4o-mini", "ollama/*"]
code = ["openai/gpt-4o-mini"]
""", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMEN_", "OPENAI_", "ANTHROPIC_"))}
        env.update(OMEN_SECRETS="file", FAKE_OPENAI_KEY=FakeOpenAI.api_key, HOME=str(tmp_path / "home"),
                   XDG_CONFIG_HOME=str(tmp_path / "xdg"))
        w = World(ollama, oai, config, data_dir, env, port)
        try:
            yield w
        finally:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.kill()
                await w.proc.wait()


async def test_kit_degrades_and_returns_to_omen_by_itself(world: World) -> None:
    await world.start_omen()
    async with AsyncOmenClient(config=world.config, environ={}) as kit:
        answer = await kit.chat(MSG)
        assert not answer.degraded and answer.route.provider == "openai"
        assert answer.route.request_id and answer.cost_usd is not None and answer.cost_usd > 0

        # killed: its endpoint file stays behind, naming a dead pid
        await world.stop_omen(signal.SIGKILL)
        assert endpoint.path_for(world.data_dir).exists()
        answer = await kit.chat(MSG)
        # At once: the pid check decided, no connection was tried and timed out (the reason
        # says which; a wall-clock bound would only measure how loaded the machine is).
        assert answer.degraded and answer.banner is not None and "did not answer within" not in answer.banner
        assert "stale endpoint file" in answer.banner
        assert answer.text == "Hello from the fake upstream." and answer.route.provider == "ollama"
        openai_calls = len(world.openai.seen)

        # started again on the same port: the next request goes to OMEN, by itself
        await world.start_omen()
        answer = await kit.chat(MSG)
        assert not answer.degraded and answer.route.provider == "openai"
        assert len(world.openai.seen) == openai_calls + 1

        # stopped cleanly: the file is gone, the kit degrades again, and comes back again
        await world.stop_omen()
        assert not endpoint.path_for(world.data_dir).exists()
        answer = await kit.chat(MSG)
        assert answer.degraded and answer.banner is not None and "did not answer within" not in answer.banner
        assert "no endpoint file" in answer.banner
        await world.start_omen()
        answer = await kit.chat(MSG)
        assert not answer.degraded
    assert all(s.path == "/v1/chat/completions" for s in world.ollama.seen)  # degraded: the compatible API


async def test_omen_ask_prints_the_answer_the_route_and_the_cost(world: World) -> None:
    await world.start_omen()
    world.openai.queue(Reply(text="Paris is the capital.", prompt_tokens=1000, completion_tokens=100))
    code, out, err = await world.ask("What is the capital of France?", "--strategy", "single")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Paris is the capital."
    assert lines[-1].startswith("[answered by openai/gpt-4o-mini | strategy single | cost $0.000210 | req_")
    assert "degraded" not in err.lower()
    assert world.openai.seen[-1].body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]

    code, out, err = await world.ask("hello", "--alias", "auto", "--budget-usd", "0.5", "--json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["provider"] == "openai" and not facts["degraded"] and facts["cost_usd"] > 0

    await world.stop_omen()
    code, out, err = await world.ask("What is the capital of France?", "--alias", "auto-fast", "--budget-usd", "0.5")
    assert code == 0, err
    assert err.startswith("! degraded mode: OMEN is not running")
    assert "not honoured: strategy: race needs OMEN" in err and "not honoured: budget_usd" in err
    assert out.splitlines()[0] == "Hello from the fake upstream."
    assert "| DEGRADED: OMEN was unreachable]" in out and "answered by ollama/llama3.2:latest" in out


async def test_omen_ask_with_tools_edits_through_glyph(world: World, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "notes.txt").write_text("helo world\n")
    glyph_cfg = tmp_path / "glyph.toml"
    glyph_cfg.write_text(f'data_dir = "{tmp_path / "glyph-data"}"\n'
                         '[rune]\nin_process = true\n'  # one process fewer to start on a busy machine
                         '[[rules]]\nserver = "rune"\ntool = "edit_file"\naction = "allow"\n', encoding="utf-8")
    edit = json.dumps({"path": "notes.txt", "edits": [{"old_text": "helo", "new_text": "hello"}]})
    world.ollama.queue(Reply(text="", tool_calls=[("rune__edit_file", edit)]), Reply(text="Fixed it."))
    code, out, err = await world.ask("fix the typo in notes.txt", "--tools", str(root), "--glyph-config",
                                     str(glyph_cfg), "--consent", "deny")  # OMEN is down: degraded
    assert code == 0, err
    assert (root / "notes.txt").read_text() == "hello world\n"
    assert "-> rune__edit_file" in err and "<- ok" in err and "degraded mode" in err
    assert out.splitlines()[0] == "Fixed it."
