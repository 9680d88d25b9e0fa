"""Helpers for the front-door tests: raw HTTP posts, SSE event lists, usage rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from omen_local.observe import UsageEvent
from tests import metering_util as mu
from tests.conftest import Stack
from tests.waiting import until

LIMIT_S = 0.100  # a client that goes away closes the upstream within this


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) for each SSE event in ``raw``."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        text = "\n".join(data)
        try:
            out.append((name, json.loads(text)))
        except ValueError:
            out.append((name, text))  # [DONE]
    return out


async def post(
    stack: Stack, path: str, payload: Any, headers: dict[str, str] | None = None, *, raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    hdrs = {**stack.auth(), "Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else json.dumps(payload).encode()
        async with http.post(stack.base + path, data=data, headers=hdrs) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def disconnect_after_first_line(stack: Stack, path: str, payload: dict[str, Any]) -> float:
    """Stream ``payload``, read one line, go away; return when the client closed."""
    async with aiohttp.ClientSession() as http:
        resp = await http.post(stack.base + path, json=payload, headers=stack.auth())
        assert resp.status == 200, await resp.text()
        first = await resp.content.readline()
        assert first
        closed = time.perf_counter()
        resp.close()
    return closed


async def post_then_abandon(stack: Stack, path: str, payload: dict[str, Any], ready: Callable[[], object]) -> float:
    """Send a request, abandon it once ``ready()`` (the upstream has it; no answer yet); return
    when the client closed."""
    async with aiohttp.ClientSession() as http:

        async def call() -> None:
            async with http.post(stack.base + path, json=payload, headers=stack.auth()) as resp:
                await resp.read()

        task = asyncio.create_task(call())
        await until(lambda: ready() or task.done(), "the request to reach the upstream")
        assert not task.done()
        closed = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return closed


async def usage_event(stack: Stack, request_id: str, *, outcome: str = "ok") -> UsageEvent:
    """The hub's usage event with ``outcome`` for ``request_id`` (waits for it to be recorded)."""

    def found() -> UsageEvent | None:
        for event in stack.service.hub.recent:
            if isinstance(event, UsageEvent) and event.request_id == request_id and event.outcome == outcome:
                return event
        return None

    return await until(found, f"a {outcome} usage event for {request_id}")


def expected_cost(stack: Stack, provider: str, model: str, prompt: int, completion: int) -> float:
    price = stack.service.config.price_for(provider, model)
    return (prompt * price.input + completion * price.output) / 1_000_000


def assert_cost(stack: Stack, event: UsageEvent, prompt: int, completion: int) -> None:
    assert (event.usage.prompt_tokens, event.usage.completion_tokens, event.estimated) == (prompt, completion, False)
    assert event.cost_usd == pytest.approx(expected_cost(stack, event.provider, event.model, prompt, completion))


async def assert_usage_row(stack: Stack, request_id: str, provider: str, prompt: int, completion: int) -> None:
    """The stored usage row (GET /v1/usage/events) of a request served whole by ``provider``."""
    rows = [r for r in await mu.usage_events(stack, request_id=request_id) if r["outcome"] == "ok"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["provider"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (provider, prompt, completion, False)
    assert row["cost_usd"] == pytest.approx(expected_cost(stack, provider, row["model"], prompt, completion))
