"""Upstreams that break their own protocol: never a 500 or a hang, failover where it is safe."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply
from tests.waiting import DEADLINE_S, until

MSG = [{"role": "user", "content": "hello"}]
CLOUD = {"omen": {"intent": "cloud"}}


def chunk(delta: object) -> bytes:
    return b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": delta}).encode() + b"\n\n"


async def streamed_body(stack: Stack) -> bytes:
    """The raw bytes of a streamed chat answer through OMEN (whatever the upstream sent)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.base}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MSG, "stream": True},
            headers=stack.auth(),
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp:
            return await resp.read()


def events(stack: Stack) -> list[tuple[str, str]]:
    return [(e.provider, e.outcome) for e in stack.service.hub.recent]


async def test_unreadable_answer_fails_over(stack: Stack) -> None:
    stack.openai.queue(Reply(raw_body={"choices": ["oops"], "usage": {"prompt_tokens": "12 tokens"}}))
    stack.anthropic.enqueue(text_reply("fine"))
    done = await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body=CLOUD)
    assert done.choices[0].message.content == "fine"
    assert events(stack) == [("openai", "error"), ("anthropic", "ok")]
    assert "cannot read" in (stack.service.hub.recent[0].error or "")


async def test_unreadable_chunk_mid_stream_ends_with_an_error_frame(stack: Stack) -> None:
    frames = [chunk([{"index": 0, "delta": {"content": "part"}, "finish_reason": None}]), chunk("not a list")]
    stack.openai.queue(Reply(raw_frames=frames))
    body = await streamed_body(stack)
    assert b'"content":"part"' in body and b'"code":"upstream_stream_error"' in body
    assert b"[DONE]" not in body
    assert events(stack) == [("openai", "error")]


async def test_an_event_holding_two_values_is_not_read_as_two_chunks(stack: Stack) -> None:
    # `data: {...},{...}` is one event whose data is not JSON: the fast path that parses a
    # read's events as one array must not take it for two events.
    part = chunk([{"index": 0, "delta": {"content": "part"}, "finish_reason": None}])
    two = chunk([{"index": 0, "delta": {"content": "A"}, "finish_reason": None}])[6:-2]
    finish = chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    stack.openai.queue(Reply(raw_frames=[part, b"data: " + two + b"," + two + b"\n\n", finish, b"data: [DONE]\n\n"]))
    body = await streamed_body(stack)
    assert b'"content":"part"' in body and b'"content":"A"' not in body
    assert b'"code":"upstream_stream_error"' in body and b"not JSON" in body and b"[DONE]" not in body
    assert events(stack) == [("openai", "error")]


async def test_done_without_finish_reason_is_not_success(stack: Stack) -> None:
    stack.openai.queue(Reply(raw_frames=[b"data: [DONE]\n\n"]))
    stack.anthropic.enqueue(text_reply("from the next candidate"))
    stream = await stack.client.chat.completions.create(model="auto", messages=MSG, stream=True, extra_body=CLOUD)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "from the next candidate"


async def test_error_event_before_the_first_token_fails_over(stack: Stack) -> None:
    # A 200 whose stream carries an error before any content (as Anthropic's overloaded_error
    # often does) has shown the client nothing: the next candidate is tried.
    overloaded = b'data: {"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": null}}\n\n'
    stack.openai.queue(Reply(raw_frames=[overloaded]))
    stack.anthropic.enqueue(text_reply("anthropic stepped in"))
    stream = await stack.client.chat.completions.create(model="auto", messages=MSG, stream=True, extra_body=CLOUD)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "anthropic stepped in"
    assert events(stack) == [("openai", "error"), ("anthropic", "ok")]


async def test_race_does_not_resend_a_request_an_upstream_rejected(stack: Stack) -> None:
    stack.ollama.queue_for("llama3.2:latest", Reply(status=400, error_message="bad request"))
    stack.ollama.queue_for("qwen2.5-coder:7b", Reply(text="qwen answers", delay_s=0.2))
    done = await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body={"omen": {"strategy": "race", "k": 2}}
    )
    assert done.choices[0].message.content == "qwen answers"
    assert stack.anthropic.requests == [] and stack.openai.seen == []


async def test_speculate_non_streamed_returns_the_fast_answer_before_the_deadline(stack: Stack) -> None:
    stack.ollama.queue_for("llama3.2:latest", Reply(text="fast"))
    stack.anthropic.enqueue(text_reply("slow", delay=60.0))
    t0 = time.perf_counter()
    done = await stack.client.chat.completions.create(
        model="auto",
        messages=MSG,
        extra_body={"omen": {"strategy": "speculate_k", "providers": ["ollama", "anthropic"], "max_latency_ms": 300}},
    )
    # Not a 504 at 300 ms, and not the slow answer's 60 s (a bound on a failure, not a timing).
    assert done.choices[0].message.content == "fast" and time.perf_counter() - t0 < DEADLINE_S


@pytest.mark.parametrize("strategy", ["race", "parallel_merge"])
async def test_fan_out_shares_the_budget_between_attempts(stack: Stack, strategy: str) -> None:
    budget = 0.0001
    stack.anthropic.enqueue(text_reply("a"))
    await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body={"omen": {"strategy": strategy, "intent": "cloud", "budget_usd": budget}}
    )
    cap_openai = stack.openai.seen[-1].body["max_completion_tokens"]  # OpenAI's dialect names the cap so
    cap_anthropic = stack.anthropic.last.body["max_tokens"]
    # Each attempt's output alone stays within its half of the budget (prices: 0.60 and 5.00 per Mtok out).
    assert cap_openai * 0.60 / 1e6 <= budget / 2 and cap_anthropic * 5.00 / 1e6 <= budget / 2
    assert cap_openai > 10 and cap_anthropic > 1
    assert sum(e.cost_usd for e in stack.service.hub.recent) <= budget


async def test_speculate_respects_provider_rate_limits_for_the_fast_candidate(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, limits={"providers": {"ollama": {"rpm": 1}}}):
        await stack.client.chat.completions.create(model="ollama/llama3.2:latest", messages=MSG)  # uses the minute's one
        n = len(stack.ollama.seen)
        stack.anthropic.enqueue(text_reply("preferred only"))
        done = await stack.client.chat.completions.create(
            model="auto", messages=MSG, extra_body={"omen": {"strategy": "speculate_k", "providers": ["ollama", "anthropic"]}}
        )
        assert done.choices[0].message.content == "preferred only"
        assert len(stack.ollama.seen) == n  # the fast (local) candidate was not sent over its limit


async def test_a_stream_whose_event_never_ends_is_cut_and_reported_not_held_in_memory(tmp_path: Path) -> None:
    """An OpenAI-compatible server that streams bytes but never ends an event: OMEN stops
    at its event limit with an OpenAI error, closes the upstream and meters the attempt once."""
    closed = asyncio.Event()
    sent = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            first = chunk([{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]) + b"data: "
            writer.write(b"%x\r\n%s\r\n" % (len(first), first))  # a first token, then an event that never ends
            piece = b"x" * 65536
            while sent < 64 * 1024 * 1024:  # 64 MB, then it would hang
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                await writer.drain()
            await asyncio.sleep(3600)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        extra = f'\n[providers.endless]\nkind = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\nmodels = [{{ name = "m" }}]\n'
        async for stack in start_stack(tmp_path, extra=extra):
            stream = await stack.client.chat.completions.create(model="endless/m", messages=MSG, stream=True)
            got = []
            with pytest.raises(openai.APIError) as caught:
                async with asyncio.timeout(30):  # mid-stream: only the 900 s total would end it
                    async for part in stream:
                        got.append(part.choices[0].delta.content)
            assert got == ["hi"] and "more than 1048576 bytes" in caught.value.message
            await asyncio.wait_for(closed.wait(), DEADLINE_S)  # bounds a failure only
            assert sent < 16 * 1024 * 1024  # stopped at the limit, not at the upstream's end
            await until(lambda s=stack: s.service.hub.recent, "the usage event of the refused stream")
            assert [(e.provider, e.outcome) for e in stack.service.hub.recent] == [("endless", "error")]
