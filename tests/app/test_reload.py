"""OmenService.reload: a new config applies to the next request, without a restart."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from omen_local import config_edit as ce
from omen_local.config import load_config
from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.waiting import until


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path):
        yield s


async def ask(stack: Stack, stream: bool = False) -> str:
    if stream:
        resp = await stack.client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], stream=True)
        async for _ in resp.parse():
            pass
        return resp.headers["x-omen-provider"]
    resp = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}])
    return resp.headers["x-omen-provider"]


async def test_disabling_a_provider_moves_the_next_request(stack: Stack, tmp_path: Path) -> None:
    assert await ask(stack) == "ollama"
    config = ce.set_provider_enabled(tmp_path / "config.toml", "ollama", False)
    await stack.service.reload(config)
    assert await ask(stack) == "anthropic"
    assert stack.service.status()["providers"]["ollama"]["reason"] == "disabled"
    config = ce.set_provider_enabled(tmp_path / "config.toml", "ollama", True)
    await stack.service.reload(config)
    assert await ask(stack, stream=True) == "ollama"  # discovered models carried over


async def test_in_flight_stream_finishes_on_the_old_router(stack: Stack, tmp_path: Path) -> None:
    stack.ollama.queue(Reply(text="slow answer in pieces", pieces=4, chunk_delay_s=0.2))
    before = len(stack.ollama.seen)
    stream = asyncio.ensure_future(ask(stack, stream=True))
    await until(lambda: len(stack.ollama.seen) > before, "the stream to reach Ollama")
    await stack.service.reload(ce.set_provider_enabled(tmp_path / "config.toml", "ollama", False))
    assert await stream == "ollama"
    assert stack.ollama.seen[-1].finished
    assert await ask(stack) == "anthropic"


async def test_new_port_rebinds_and_a_taken_port_keeps_the_old(stack: Stack, tmp_path: Path) -> None:
    old_url = stack.service.url
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(OSError):
            await stack.service.reload(load_config(tmp_path / "config.toml", overrides={"server": {"port": taken}}))
    assert stack.service.url == old_url
    assert await ask(stack) == "ollama"  # still serving where it was

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    await stack.service.reload(load_config(tmp_path / "config.toml", overrides={"server": {"port": free}}))
    assert stack.service.url.endswith(f":{free}")
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.service.url + "/health") as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(old_url + "/health"):
                pass


async def test_quota_change_applies_to_the_next_request(stack: Stack, tmp_path: Path) -> None:
    config = ce.set_quota(tmp_path / "config.toml", "user", "owner", {"daily_usd": 0})
    await stack.service.reload(config)
    import openai

    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 402
    await stack.service.reload(ce.set_quota(tmp_path / "config.toml", "user", "owner", {"daily_usd": None}))
    assert await ask(stack) == "ollama"
