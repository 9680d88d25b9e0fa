"""What a streamed chat answer looks like on the wire, frame by frame.

The encoder writes each frame from a shared start (id, object, created, model,
system_fingerprint) plus the chunk's own part; these tests pin the frames down so that
the fast path stays byte-for-byte what encoding each frame as a whole object gives, and
that streamed chunks carry the upstream's ``system_fingerprint`` as whole answers do.
"""

from __future__ import annotations

import json
import random
from typing import Any

import aiohttp
import orjson
import pytest

from omen_local.errors import OmenError
from omen_local.providers.base import Chunk, Usage
from omen_local.server.sse import ChunkEncoder
from tests.conftest import Stack
from tests.fakes.base import Reply

# ---------------------------------------------------------------- the encoder against whole-object encoding


def reference_frame(enc_id: str, created: int, model: str, fingerprint: str | None, chunk: Chunk, first: bool) -> bytes:
    """A chunk frame as encoding the whole object gives it (what OMEN wrote before the fast path)."""
    delta = chunk.delta
    if first:
        delta = {"role": "assistant", **delta}
        if "content" not in delta and "tool_calls" not in delta:
            delta["content"] = ""
    frame: dict[str, Any] = {"id": enc_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if fingerprint is not None:
        frame["system_fingerprint"] = fingerprint
    frame["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": chunk.finish_reason}]
    if chunk.omen is not None:
        frame["omen"] = chunk.omen
    return b"data: " + orjson.dumps(frame) + b"\n\n"


def random_chunk(rng: random.Random) -> Chunk:
    delta: dict[str, Any] = {}
    kind = rng.choice(["content", "tool", "reasoning", "empty", "unicode"])
    if kind == "content":
        delta["content"] = rng.choice(["Hello", " world", "", 'quote " and \\ backslash', "line\nbreak"])
    elif kind == "tool":
        delta["tool_calls"] = [{"index": 0, "function": {"arguments": '{"city": "Par'}}]
    elif kind == "reasoning":
        delta["reasoning_content"] = "thinking"
    elif kind == "unicode":
        delta["content"] = "caf\u00e9 \u2603 \U0001f600"
    return Chunk(
        delta=delta,
        finish_reason=rng.choice([None, None, None, "stop", "length", "tool_calls"]),
        omen=rng.choice([None, None, {"swap": {"from": "a/x", "to": "b/y", "discard_chars": 3}}]),
        fingerprint=rng.choice([None, "fp_a", "fp_a", "fp_b"]),
    )


@pytest.mark.parametrize("seed", range(20))
def test_encoder_frames_are_the_bytes_of_the_whole_object(seed: int) -> None:
    rng = random.Random(seed)
    enc = ChunkEncoder("chatcmpl-abc", "gpt-4o-mini")
    fingerprint = None
    model = "gpt-4o-mini"
    for i in range(30):
        if rng.random() < 0.1:
            model = rng.choice(["gpt-4o-mini", "claude-haiku-4-5", 'odd "model"'])
            enc.model = model
        chunk = random_chunk(rng)
        if chunk.fingerprint is not None:
            fingerprint = chunk.fingerprint
        assert enc.chunk(chunk) == reference_frame("chatcmpl-abc", enc.created, model, fingerprint, chunk, i == 0)
    usage = Usage(12, 5, cached_tokens=2)
    expected: dict[str, Any] = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": enc.created, "model": model}
    if fingerprint is not None:
        expected["system_fingerprint"] = fingerprint
    expected |= {"choices": [], "usage": usage.to_openai(), "omen": {"cost_usd": 0.1}}
    assert enc.usage(usage, {"cost_usd": 0.1}) == b"data: " + orjson.dumps(expected) + b"\n\n"
    err = OmenError(502, "broken", code="upstream_stream_error")
    assert enc.error(err) == b"data: " + orjson.dumps(err.body()) + b"\n\n"


# ---------------------------------------------------------------- over HTTP


async def frames_of(stack: Stack, body: dict[str, Any]) -> list[Any]:
    async with aiohttp.ClientSession() as http, http.post(
        f"{stack.base}/v1/chat/completions", json=body, headers=stack.auth()
    ) as resp:
        assert resp.status == 200
        raw = await resp.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    events = [e for e in raw.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    return [json.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in events]


async def test_streamed_chunks_carry_the_upstream_system_fingerprint(stack: Stack) -> None:
    stack.openai.queue(Reply(text="one two three four five", pieces=5, tool_calls=[("f", '{"a": 1}')]))
    frames = await frames_of(
        stack,
        {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"include_usage": True}},
    )
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert len(chunks) >= 8
    # One id, one created, one model for the whole stream; every chunk (usage included) has
    # the upstream's fingerprint, in OpenAI's key order.
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["model"] for c in chunks} == {"gpt-4o-mini"}
    assert all(c["system_fingerprint"] == "fp_fake" for c in chunks)
    assert all(list(c)[:5] == ["id", "object", "created", "model", "system_fingerprint"] for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    body = chunks[:-1]
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert all(list(c["choices"][0]) == ["index", "delta", "logprobs", "finish_reason"] for c in body)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in body) == "one two three four five"
    assert [c["choices"][0]["finish_reason"] for c in body if c["choices"][0]["finish_reason"]] == ["stop"]
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 11 and usage["omen"]["usage_estimated"] is False


async def test_non_streamed_and_streamed_answers_agree_on_the_fingerprint(stack: Stack) -> None:
    done = await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    stream = await stack.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert done.system_fingerprint == "fp_fake"
    assert chunks and all(c.system_fingerprint == done.system_fingerprint for c in chunks)


@pytest.mark.parametrize("model", ["ollama/llama3.2:latest", "anthropic/claude-haiku-4-5"])
async def test_upstreams_without_a_fingerprint_send_none(stack: Stack, model: str) -> None:
    frames = await frames_of(stack, {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    chunks = frames[:-1]
    assert chunks and all("system_fingerprint" not in c for c in chunks)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"


# ---------------------------------------------------------------- reads of many events


def _chunk_event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "system_fingerprint": "fp",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


_ANSWER = _chunk_event({"role": "assistant", "content": ""}) + b"".join(_chunk_event({"content": f"w{i}"}) for i in range(10))
_END = _chunk_event({}, "stop") + b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":10}}\n\ndata: [DONE]\n\n'


async def test_the_first_content_of_a_whole_answer_goes_out_first() -> None:
    """An upstream that sends a whole answer in one write (over a real socket): the first
    batch ends with the first content (the client's first token waits for nothing else),
    the rest of the read follows as one batch that ends the stream."""
    import asyncio

    from omen_local.config import ProviderConfig
    from omen_local.providers import _http
    from omen_local.providers.openai_compat import OpenAICompatProvider
    from tests.test_transport import Scripted

    sse = _ANSWER + _END
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(sse)
    server = Scripted()
    server.scripts.append(lambda r: [head + sse])
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    async with server.server, _http.make_session() as session:
        # dialect fixed: no detection GET (the scripted server answers one request)
        config = ProviderConfig(name="o", kind="openai", base_url=str(server.url.with_path("/v1")), dialect="generic")
        provider = OpenAICompatProvider(config, session)
        batches = [b async for b in provider.stream_batches("m", {"messages": [{"role": "user", "content": "hi"}]})]
    assert [c.delta.get("content") for c in batches[0]] == ["", "w0"]  # role chunk + first content
    assert len(batches) == 2 and not batches[0].last and batches[1].last
    assert "".join(c.delta.get("content") or "" for b in batches for c in b) == "".join(f"w{i}" for i in range(10))
    assert batches[1][-2].finish_reason == "stop" and batches[1][-1].usage is not None
    assert batches[1][-1].usage.completion_tokens == 10


async def test_the_first_content_of_a_read_goes_out_before_the_rest_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that holds the first content and more, but not the end: the first batch ends
    with the first content (the client's first token waits for nothing else), the rest of
    the read follows as one batch, the end as another."""
    import contextlib
    from collections.abc import AsyncIterator
    from types import SimpleNamespace

    from omen_local.config import ProviderConfig
    from omen_local.providers.openai_compat import OpenAICompatProvider

    reads = [_ANSWER, _END]

    async def readany() -> bytes:
        return reads.pop(0) if reads else b""

    @contextlib.asynccontextmanager
    async def exchange(provider: Any, path: str, body: Any) -> AsyncIterator[Any]:
        yield SimpleNamespace(content=SimpleNamespace(readany=readany))

    monkeypatch.setattr(OpenAICompatProvider, "_exchange", exchange)
    provider = OpenAICompatProvider(ProviderConfig(name="o", kind="openai", base_url="http://127.0.0.1:9/v1"), None)
    batches = [b async for b in provider.stream_batches("m", {"messages": [{"role": "user", "content": "hi"}]})]
    assert [[c.delta.get("content") for c in b] for b in batches[:2]] == [["", "w0"], [f"w{i}" for i in range(1, 10)]]
    assert [b.last for b in batches] == [False, False, True]
    assert batches[2][0].finish_reason == "stop" and batches[2][1].usage is not None


@pytest.mark.parametrize("seed", range(10))
def test_a_read_encoded_at_once_is_the_frames_of_its_chunks(seed: int) -> None:
    rng = random.Random(seed)
    one, many = ChunkEncoder("chatcmpl-a", "m"), ChunkEncoder("chatcmpl-a", "m")
    many.created = one.created
    for _ in range(8):
        batch = [random_chunk(rng) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.3:
            batch.append(Chunk())  # nothing to say: no frame
        expected = b"".join(one.chunk(c) for c in batch if c.delta or c.finish_reason is not None or c.omen is not None)
        assert many.frames(batch) == expected
