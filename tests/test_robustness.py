"""Bad input gets a 4xx in the OpenAI error shape, never a 500, and the server keeps serving."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

import aiohttp
import pytest

from tests.conftest import Stack

VALID: dict[str, Any] = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ],
    "temperature": 0.5,
    "max_tokens": 20,
    "stream": False,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "omen": {"strategy": "single", "intent": "chat", "providers": ["ollama"], "k": 2},
}

BAD_CASES: list[tuple[str, Any, str | None]] = [
    ("not an object", [1, 2, 3], None),
    ("no model", {"messages": VALID["messages"]}, "model"),
    ("model not a string", {**VALID, "model": 42}, "model"),
    ("no messages", {"model": "auto"}, "messages"),
    ("empty messages", {**VALID, "messages": []}, "messages"),
    ("message not object", {**VALID, "messages": ["hi"]}, "messages[0]"),
    ("bad role", {**VALID, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ("content number", {**VALID, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("bad part", {**VALID, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type"),
    ("tool msg no id", {**VALID, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ("stream string", {**VALID, "stream": "yes"}, "stream"),
    ("temperature high", {**VALID, "temperature": 9}, "temperature"),
    ("temperature bool", {**VALID, "temperature": True}, "temperature"),
    ("max_tokens zero", {**VALID, "max_tokens": 0}, "max_tokens"),
    ("max_tokens float", {**VALID, "max_tokens": 1.5}, "max_tokens"),
    ("n two", {**VALID, "n": 2}, "n"),
    ("stop number", {**VALID, "stop": 7}, "stop"),
    ("tools not list", {**VALID, "tools": {}}, "tools"),
    ("tool no name", {**VALID, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ("tool_choice bad", {**VALID, "tool_choice": "always"}, "tool_choice"),
    ("response_format bad", {**VALID, "response_format": {"type": "yaml"}}, "response_format"),
    ("omen not object", {**VALID, "omen": "fast"}, "omen"),
    ("unknown hint", {**VALID, "omen": {"speed": "max"}}, "omen.speed"),
    ("unknown strategy", {**VALID, "omen": {"strategy": "fastest"}}, "omen.strategy"),
    ("k zero", {**VALID, "omen": {"k": 0}}, "omen.k"),
    ("k string", {**VALID, "omen": {"k": "2"}}, "omen.k"),
    ("unknown intent", {**VALID, "omen": {"intent": "poetry"}}, "omen.intent"),
    ("providers not list", {**VALID, "omen": {"providers": "ollama"}}, "omen.providers"),
    ("unknown provider", {**VALID, "omen": {"providers": ["skynet"]}}, "omen.providers"),
    ("negative budget", {**VALID, "omen": {"budget_usd": -1}}, "omen.budget_usd"),
    ("latency zero", {**VALID, "omen": {"max_latency_ms": 0}}, "omen.max_latency_ms"),
    ("bad stickiness", {**VALID, "omen": {"stickiness": "forever"}}, "omen.stickiness"),
    ("huge session", {**VALID, "omen": {"session": "s" * 10_000}}, "omen.session"),
    ("huge model name", {**VALID, "model": "m" * 100_000}, "model"),
]


async def send(http: aiohttp.ClientSession, stack: Stack, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.post(
        stack.base + "/v1/chat/completions",
        data=data,
        headers={**stack.auth(), "Content-Type": "application/json", **(headers or {})},
    ) as resp:
        if resp.content_type == "text/event-stream":
            return resp.status, await resp.text()
        return resp.status, await resp.json(content_type=None)


def assert_openai_error(status: int, body: Any) -> None:
    assert 400 <= status < 500, (status, body)
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert set(err) == {"message", "type", "code", "param"}


@pytest.mark.parametrize(("name", "payload", "param"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
async def test_bad_request_is_400_naming_the_field(stack: Stack, name: str, payload: Any, param: str | None) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await send(http, stack, json.dumps(payload).encode())
        assert status == 400
        assert_openai_error(status, body)
        if param is not None:
            assert body["error"]["param"] == param
        good, _ = await send(http, stack, json.dumps(VALID).encode())
        assert good == 200


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"model": "auto", "messages": [', b"\xff\xfe\x00garbage", b"null", b"[]", b'"auto"', b"{}" * 3, b"NaN"],
)
async def test_malformed_json(stack: Stack, raw: bytes) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await send(http, stack, raw)
        assert_openai_error(status, body)


async def test_unknown_route_and_method(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.base + "/v1/nothing", headers=stack.auth()) as resp:
            assert resp.status == 404
            assert_openai_error(resp.status, await resp.json())
        async with http.get(stack.base + "/v1/chat/completions", headers=stack.auth()) as resp:
            assert resp.status == 405
            assert_openai_error(resp.status, await resp.json())


async def test_truncated_body_then_next_request_is_served(stack: Stack) -> None:
    host, port = stack.service.config.server.host, stack.service.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        + f"Authorization: Bearer {stack.token}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        + b'{"model": "auto", "mess'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # Garbage that is not HTTP at all.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(1000), 2)
    assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request")  # refused at the HTTP layer
    writer.close()
    done = await stack.client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "still there?"}])
    assert done.choices[0].message.content


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """Replace one random node of ``value`` with a hostile value."""
    hostile = [None, True, -1, 10**30, 1e308, "", "x" * 50_000, [], {}, [None], {"": None}, "\u0000", "\ud800"[:0] + "\u202e"]
    if depth > 4 or not isinstance(value, dict | list) or rng.random() < 0.25:
        return rng.choice(hostile)
    value = copy.copy(value)
    if isinstance(value, dict):
        if not value or rng.random() < 0.1:
            value[rng.choice(["model", "messages", "omen", "zzz", "tools"])] = rng.choice(hostile)
            return value
        key = rng.choice(list(value))
        if rng.random() < 0.15:
            del value[key]
        else:
            value[key] = mutate(rng, value[key], depth + 1)
    else:
        if value:
            i = rng.randrange(len(value))
            value[i] = mutate(rng, value[i], depth + 1)
    return value


async def test_fuzzed_bodies_never_500(stack: Stack) -> None:
    rng = random.Random(20261125)
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            body = mutate(rng, copy.deepcopy(VALID))
            status, reply = await send(http, stack, json.dumps(body).encode())
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (body, reply)
            if status != 200:
                assert_openai_error(status, reply)
        good, _ = await send(http, stack, json.dumps(VALID).encode())
        assert good == 200
    assert statuses.get(400, 0) > 100  # the fuzzer really produced bad requests
