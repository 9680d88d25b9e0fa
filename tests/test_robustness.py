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
from tests.waiting import DEADLINE_S

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
    reply = await asyncio.wait_for(reader.read(1000), DEADLINE_S)  # bounds a failure only
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


# ---------------------------------------------------------------- the other doors

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
VALID_MESSAGES: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 20,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}]}]},
    ],
    "tools": [{"name": "f", "description": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
    "temperature": 0.5,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u"},
    "stream": False,
    "omen": {"providers": ["ollama"]},
}
VALID_RESPONSES: dict[str, Any] = {
    "model": "auto",
    "instructions": "be brief",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ],
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "tool_choice": "auto",
    "max_output_tokens": 20,
    "text": {"format": {"type": "text"}},
    "reasoning": {"effort": "low"},
    "store": False,
    "stream": False,
    "omen": {"providers": ["ollama"]},
}


async def _send_to(http: aiohttp.ClientSession, stack: Stack, path: str, data: bytes) -> tuple[int, Any]:
    async with http.post(stack.base + path, data=data, headers={**stack.auth(), "Content-Type": "application/json"}) as resp:
        if resp.content_type == "text/event-stream":
            return resp.status, await resp.text()
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(("path", "valid"), [("/v1/messages", VALID_MESSAGES), ("/v1/responses", VALID_RESPONSES)])
async def test_fuzzed_door_bodies_never_500(stack: Stack, path: str, valid: dict[str, Any]) -> None:
    rng = random.Random(20261126)
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as http:
        good, reply = await _send_to(http, stack, path, json.dumps(valid).encode())
        assert good == 200, reply
        for _ in range(250):
            body = mutate(rng, copy.deepcopy(valid))
            status, reply = await _send_to(http, stack, path, json.dumps(body).encode())
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (body, reply)
            if status == 200:
                continue
            if path == "/v1/messages":  # Anthropic's error shape on this door
                assert reply["type"] == "error" and isinstance(reply["error"]["message"], str) and reply["error"]["type"]
            else:
                assert_openai_error(status, reply)
        for raw in (b"", b"{", b"\xff\xfe", b"null", b"[]", b"NaN"):
            status, reply = await _send_to(http, stack, path, raw)
            assert 400 <= status < 500, (raw, reply)
        good, _ = await _send_to(http, stack, path, json.dumps(valid).encode())
        assert good == 200
    assert statuses.get(400, 0) > 80  # the fuzzer really produced bad requests


def test_fuzzed_embeddings_and_completions_bodies_are_400s_or_valid() -> None:
    from omen_local.api.completions import parse_completion_request
    from omen_local.api.embeddings import parse_embeddings_request
    from omen_local.errors import OmenError

    rng = random.Random(7)
    cases = [
        (parse_embeddings_request, {"model": "auto", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8, "user": "u", "omen": {"intent": "chat"}}),
        (parse_completion_request, {"model": "auto", "prompt": "def f(", "suffix": "pass", "max_tokens": 8, "stop": ["\n"], "stream": True, "stream_options": {"include_usage": True}, "omen": {"intent": "chat"}}),
    ]
    for parse, valid in cases:
        rejected = 0
        for _ in range(500):
            body = mutate(rng, copy.deepcopy(valid))
            try:
                parse(body, intents=("chat",), providers=("ollama",))
            except OmenError as err:
                assert err.status == 400 and err.message
                rejected += 1
        assert rejected > 150
