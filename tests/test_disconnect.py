"""A client that goes away cancels the upstream request at once (< 100 ms)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import Stack
from tests.fakes.base import Reply

MSG = [{"role": "user", "content": "tell me a long story"}]
LIMIT_S = 0.100


def body(stream: bool, model: str = "auto") -> dict[str, object]:
    return {"model": model, "messages": MSG, "stream": stream}


async def _post_then_abandon(stack: Stack, payload: dict[str, object], after: float) -> float:
    """Send a request, abandon it after ``after`` seconds; return when the client closed."""
    async with aiohttp.ClientSession() as http:

        async def call() -> None:
            async with http.post(f"{stack.base}/v1/chat/completions", json=payload, headers=stack.auth()) as resp:
                await resp.read()

        task = asyncio.create_task(call())
        await asyncio.sleep(after)
        assert not task.done()
        closed = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return closed


async def test_disconnect_mid_stream_closes_upstream(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="x" * 200, pieces=100, chunk_delay_s=0.05))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{stack.base}/v1/chat/completions", json=body(True), headers=stack.auth())
        assert resp.status == 200
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        closed = time.perf_counter()
        resp.close()
    seen = stack.ollama.seen[-1]
    assert await stack.ollama.wait_closed(seen) - closed < LIMIT_S
    assert not seen.finished
    await asyncio.sleep(0.05)
    event = stack.service.hub.recent[-1]
    assert event.outcome == "cancelled" and event.provider == "ollama"
    assert event.estimated and event.usage.prompt_tokens > 0


async def test_disconnect_before_first_token_closes_upstream(stack: Stack) -> None:
    stack.ollama.queue(Reply(hang=True))
    closed = await _post_then_abandon(stack, body(True), 0.3)
    seen = stack.ollama.seen[-1]
    assert await stack.ollama.wait_closed(seen) - closed < LIMIT_S
    await asyncio.sleep(0.05)
    assert stack.service.hub.recent[-1].outcome == "cancelled"


async def test_disconnect_non_streaming_closes_upstream(stack: Stack) -> None:
    stack.openai.queue(Reply(hang=True))
    closed = await _post_then_abandon(stack, body(False, "gpt-4o-mini"), 0.3)
    seen = stack.openai.seen[-1]
    assert await stack.openai.wait_closed(seen) - closed < LIMIT_S
    await asyncio.sleep(0.05)
    assert stack.service.hub.recent[-1].outcome == "cancelled"


async def test_disconnect_anthropic_stream_closes_upstream(stack: Stack) -> None:
    from tests.fakes.fake_anthropic import text_reply

    stack.anthropic.enqueue(text_reply([f"w{i} " for i in range(100)], delta_delay=0.05))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{stack.base}/v1/chat/completions", json=body(True, "claude-haiku-4-5"), headers=stack.auth()
        )
        await resp.content.readline()
        resp.close()
    await asyncio.sleep(0.1)
    event = stack.service.hub.recent[-1]
    assert event.outcome == "cancelled" and event.provider == "anthropic"


async def test_server_keeps_serving_after_disconnects(stack: Stack) -> None:
    stack.ollama.queue(Reply(hang=True), Reply(hang=True))
    await _post_then_abandon(stack, body(True), 0.1)
    await _post_then_abandon(stack, body(False), 0.1)
    done = await stack.client.chat.completions.create(model="auto", messages=MSG)
    assert done.choices[0].message.content


async def test_disconnect_during_a_race_closes_every_candidate(stack: Stack) -> None:
    from tests.fakes.fake_anthropic import text_reply

    stack.openai.queue(Reply(hang=True))
    stack.anthropic.enqueue(text_reply("never", delay=30))
    payload = {**body(True), "omen": {"strategy": "race", "intent": "cloud"}}
    closed = await _post_then_abandon(stack, payload, 0.3)
    assert await stack.openai.wait_closed(stack.openai.seen[-1]) - closed < LIMIT_S
    assert await stack.anthropic.wait_closed(stack.anthropic.last) - closed < LIMIT_S
    await asyncio.sleep(0.05)
    assert sorted(e.outcome for e in stack.service.hub.recent) == ["cancelled", "cancelled"]


async def test_disconnect_during_speculation_closes_fast_and_preferred(stack: Stack) -> None:
    from tests.fakes.fake_anthropic import text_reply

    stack.ollama.queue_for("llama3.2:latest", Reply(text="x" * 100, pieces=50, chunk_delay_s=0.05))
    stack.anthropic.enqueue(text_reply("late", delay=30))
    payload = {**body(True), "omen": {"strategy": "speculate_k", "providers": ["ollama", "anthropic"]}}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{stack.base}/v1/chat/completions", json=payload, headers=stack.auth())
        await resp.content.readline()
        closed = time.perf_counter()
        resp.close()
    assert await stack.ollama.wait_closed(stack.ollama.seen[-1]) - closed < LIMIT_S
    assert await stack.anthropic.wait_closed(stack.anthropic.last) - closed < LIMIT_S
