"""Helpers for the metering tests: the usage API over HTTP, SSE frames, config snippets."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import Stack

MSG = [{"role": "user", "content": "hi"}]


async def get_json(stack: Stack, path: str, token: str | None = None, **params: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with http.get(f"{stack.base}{path}", params=query, headers=stack.auth(token)) as resp:
            return resp.status, await resp.json()


async def usage_events(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    status, body = await get_json(stack, "/v1/usage/events", limit=1000, **params)
    assert status == 200, body
    return list(body["data"])


async def post(stack: Stack, payload: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, str], Any]:
    """One chat request over raw HTTP; streams come back as their list of data frames."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.base}/v1/chat/completions", json=payload, headers=stack.auth(token)) as resp:
            if payload.get("stream") and resp.status == 200:
                frames = [json.loads(line[6:]) async for line in resp.content if line.startswith(b"data: {")]
                return resp.status, dict(resp.headers), frames
            return resp.status, dict(resp.headers), await resp.json()


def refresh_delay_passes(stack: Stack) -> None:
    """The documented ``REFRESH_S`` passes for the running server's quota book: its injected
    clock moves on by that much, so the next request looks at quotas.json again (the book
    reads the file on its clock, not on a timer; docs/metering.md)."""
    from omen_local.metering.books import REFRESH_S

    assert stack.service.metering is not None
    book = stack.service.metering.quotas
    earlier = book.clock
    book.clock = lambda: earlier() + REFRESH_S
