"""End to end with the official openai SDK as the client, fake providers as upstreams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply, tool_reply

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}



@pytest.fixture(params=["http", "tls"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """This module's tests run over plain HTTP and over TLS (tests/conftest.py's test CA)."""
    async for s in start_stack(tmp_path, tls=request.param == "tls"):
        yield s

async def test_auto_plain_goes_local_first(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="Bonjour!", prompt_tokens=21, completion_tokens=4))
    raw = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello in French"}]
    )
    done = raw.parse()
    assert done.choices[0].message.content == "Bonjour!"
    assert done.choices[0].finish_reason == "stop"
    assert done.model == "llama3.2:latest"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (21, 4)
    assert raw.headers["x-omen-provider"] == "ollama"
    assert raw.headers["x-omen-model"] == "llama3.2:latest"
    assert raw.headers["x-omen-strategy"] == "single"
    assert raw.headers["x-omen-request-id"].startswith("req_")
    sent = stack.ollama.seen[-1].body
    assert sent["model"] == "llama3.2:latest" and sent["stream"] is False


async def test_auto_streamed_with_usage(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="one two three four", pieces=4, prompt_tokens=9, completion_tokens=5))
    stream = await stack.client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 9 and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


async def test_stream_without_include_usage_sends_no_usage_chunk(stack: Stack) -> None:
    stream = await stack.client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "openai/gpt-4o-mini"])
async def test_explicit_openai_model(stack: Stack, model: str) -> None:
    stack.openai.queue(Reply(text="from openai", model="gpt-4o-mini-2024-07-18", cached_tokens=3))
    raw = await stack.client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], temperature=0.2, max_tokens=50, stop=["END"]
    )
    done = raw.parse()
    assert done.choices[0].message.content == "from openai"
    assert done.model == "gpt-4o-mini-2024-07-18"
    assert raw.headers["x-omen-provider"] == "openai"
    sent = stack.openai.seen[-1].body
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.2 and sent["stop"] == ["END"]
    assert "omen" not in sent


async def test_openai_stream_injects_include_usage_upstream(stack: Stack) -> None:
    stream = await stack.client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from the fake upstream."
    assert stack.openai.seen[-1].body["stream_options"] == {"include_usage": True}
    event = stack.service.hub.recent[-1]
    assert (event.provider, event.usage.prompt_tokens, event.usage.completion_tokens) == ("openai", 11, 7)
    assert event.estimated is False and event.outcome == "ok"
    assert event.cost_usd == pytest.approx((11 * 0.15 + 7 * 0.60) / 1e6)


async def test_anthropic_tool_call_round_trip_streamed(stack: Stack) -> None:
    stack.anthropic.enqueue(tool_reply("get_weather", {"city": "Paris"}, text="Let me check."))
    stream = await stack.client.chat.completions.create(
        model="claude-haiku-4-5",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    text = ""
    finish = None
    async for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
            slot["id"] += tc.id or ""
            slot["name"] += (tc.function.name if tc.function else None) or ""
            slot["args"] += (tc.function.arguments if tc.function else None) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me check."
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["args"]) == {"city": "Paris"}
    sent = stack.anthropic.last.body
    assert sent["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert sent["tools"][0]["name"] == "get_weather"

    # Second turn: the tool result goes back and Anthropic sees tool_use/tool_result blocks.
    stack.anthropic.enqueue(text_reply("It is sunny in Paris."))
    done = await stack.client.chat.completions.create(
        model="claude-haiku-4-5",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": calls[0]["id"], "type": "function", "function": {"name": "get_weather", "arguments": calls[0]["args"]}}
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21C"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert done.choices[0].message.content == "It is sunny in Paris."
    msgs = stack.anthropic.last.body["messages"]
    assert msgs[1]["content"][0]["type"] == "tool_use" and msgs[1]["content"][0]["input"] == {"city": "Paris"}
    assert msgs[2]["role"] == "user" and msgs[2]["content"][0]["type"] == "tool_result"
    assert msgs[2]["content"][0]["tool_use_id"] == calls[0]["id"]


async def test_anthropic_tool_call_non_streamed(stack: Stack) -> None:
    stack.anthropic.enqueue(tool_reply("get_weather", {"city": "Oslo"}))
    done = await stack.client.chat.completions.create(
        model="anthropic/claude-haiku-4-5",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
    )
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert done.choices[0].finish_reason == "tool_calls"


async def test_errors_surface_as_sdk_exceptions(stack: Stack) -> None:
    bad = openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        await bad.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert auth.value.code == "invalid_api_key"
    await bad.close()

    with pytest.raises(openai.NotFoundError) as nf:
        await stack.client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as br:
        await stack.client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], extra_body={"omen": {"strategy": "fastest"}}
        )
    assert br.value.param == "omen.strategy"


async def test_models_list_and_retrieve(stack: Stack) -> None:
    models = [m.id async for m in stack.client.models.list()]
    assert models[0] == "auto"
    assert "ollama/llama3.2:latest" in models and "openai/gpt-4o-mini" in models
    assert "anthropic/claude-sonnet-4-5" in models
    got = await stack.client.models.retrieve("gpt-4o-mini")
    assert got.id == "openai/gpt-4o-mini" and got.owned_by == "openai"
