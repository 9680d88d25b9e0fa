"""A client that goes away cancels the upstream request at once (< 100 ms)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from omen_local.observe import UsageEvent
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.waiting import new_post, until

MSG = [{"role": "user", "content": "tell me a long story"}]
LIMIT_S = 0.100


async def _last_event(stack: Stack, count: int = 1) -> UsageEvent:
    """The last usage event, once there are ``count`` (an abandoned request's is recorded
    just after the cancellation)."""
    await until(lambda: len(stack.service.hub.recent) >= count, "the cancelled request's usage event")
    return stack.service.hub.recent[-1]


def body(stream: bool, model: str = "auto") -> dict[str, object]:
    return {"model": model, "messages": MSG, "stream": stream}


async def _post_then_abandon(stack: Stack, payload: dict[str, object], ready: Callable[[], object]) -> float:
    """Send a request, abandon it once ``ready()`` (the upstreams have it); return when the
    client closed."""
    async with aiohttp.ClientSession() as http:

        async def call() -> None:
            async with http.post(f"{stack.base}/v1/chat/completions", json=payload, headers=stack.auth()) as resp:
                await resp.read()

        task = asyncio.create_task(call())
        await until(lambda: ready() or task.done(), "the request to reach the upstream")
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
    event = await _last_event(stack)
    assert event.outcome == "cancelled" and event.provider == "ollama"
    assert event.estimated and event.usage.prompt_tokens > 0


async def test_disconnect_before_first_token_closes_upstream(stack: Stack) -> None:
    stack.ollama.queue(Reply(hang=True))
    closed = await _post_then_abandon(stack, body(True), new_post(stack.ollama.seen))
    seen = stack.ollama.seen[-1]
    assert await stack.ollama.wait_closed(seen) - closed < LIMIT_S
    assert (await _last_event(stack)).outcome == "cancelled"


async def test_disconnect_non_streaming_closes_upstream(stack: Stack) -> None:
    stack.openai.queue(Reply(hang=True))
    closed = await _post_then_abandon(stack, body(False, "gpt-4o-mini"), new_post(stack.openai.seen))
    seen = stack.openai.seen[-1]
    assert await stack.openai.wait_closed(seen) - closed < LIMIT_S
    assert (await _last_event(stack)).outcome == "cancelled"


async def test_disconnect_anthropic_stream_closes_upstream(stack: Stack) -> None:
    from tests.fakes.fake_anthropic import text_reply

    stack.anthropic.enqueue(text_reply([f"w{i} " for i in range(100)], delta_delay=0.05))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{stack.base}/v1/chat/completions", json=body(True, "claude-haiku-4-5"), headers=stack.auth()
        )
        await resp.content.readline()
        resp.close()
    event = await _last_event(stack)
    assert event.outcome == "cancelled" and event.provider == "anthropic"


async def test_server_keeps_serving_after_disconnects(stack: Stack) -> None:
    stack.ollama.queue(Reply(hang=True), Reply(hang=True))
    await _post_then_abandon(stack, body(True), new_post(stack.ollama.seen))
    await _post_then_abandon(stack, body(False), new_post(stack.ollama.seen))
    done = await stack.client.chat.completions.create(model="auto", messages=MSG)
    assert done.choices[0].message.content


async def test_disconnect_during_a_race_closes_every_candidate(stack: Stack) -> None:
    from tests.fakes.fake_anthropic import text_reply

    stack.openai.queue(Reply(hang=True))
    stack.anthropic.enqueue(text_reply("never", delay=30))
    payload = {**body(True), "omen": {"strategy": "race", "intent": "cloud"}}
    openai_seen, anthropic_seen = new_post(stack.openai.seen), new_post(stack.anthropic.requests)
    closed = await _post_then_abandon(stack, payload, lambda: openai_seen() and anthropic_seen())
    assert await stack.openai.wait_closed(stack.openai.seen[-1]) - closed < LIMIT_S
    assert await stack.anthropic.wait_closed(stack.anthropic.last) - closed < LIMIT_S
    outcomes = await until(
        lambda: len(stack.service.hub.recent) >= 2 and [e.outcome for e in stack.service.hub.recent],
        "a usage event from each candidate",
    )
    assert sorted(outcomes) == ["cancelled", "cancelled"]


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
