"""Ollama's native API: translation, NDJSON streaming, discovery, errors."""

from __future__ import annotations

import json

import openai
import pytest

from omen_local.providers.base import UpstreamError
from omen_local.providers.ollama import to_ollama
from tests.conftest import Stack
from tests.fakes.base import Reply

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_translation_of_options_images_tools_and_format() -> None:
    body = {
        "messages": [
            {"role": "developer", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"x": 1}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a pixel"},
        ],
        "temperature": 0.1,
        "max_completion_tokens": 64,
        "stop": "END",
        "seed": 7,
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    }
    out = to_ollama("ollama", "llava:7b", body, True)
    assert out["model"] == "llava:7b" and out["stream"] is True
    assert out["messages"][0] == {"role": "system", "content": "be terse"}
    assert out["messages"][1]["images"] == [PNG] and out["messages"][1]["content"] == "what is this?"
    assert out["messages"][2]["tool_calls"] == [{"function": {"name": "look", "arguments": {"x": 1}}}]
    assert out["messages"][3] == {"role": "tool", "content": "a pixel", "tool_name": "look"}
    assert out["options"] == {"temperature": 0.1, "seed": 7, "num_predict": 64, "stop": ["END"]}
    assert out["format"] == {"type": "object"}
    assert out["tools"] == body["tools"]
    assert to_ollama("o", "m", {**body, "response_format": {"type": "json_object"}}, False)["format"] == "json"
    assert "tools" not in to_ollama("o", "m", {**body, "tool_choice": "none"}, False)


def test_remote_image_urls_are_unsupported_not_crashes() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
    with pytest.raises(UpstreamError) as err:
        to_ollama("ollama", "m", body, False)
    assert err.value.kind == "unsupported" and err.value.retryable


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "look"}}], ids=["required", "named"])
def test_a_forced_tool_choice_is_unsupported_not_dropped(choice: object) -> None:
    """/api/chat cannot force a tool call: routing moves on rather than let the model answer in prose."""
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "look"}}], "tool_choice": choice}
    with pytest.raises(UpstreamError) as err:
        to_ollama("ollama", "m", body, False)
    assert err.value.kind == "unsupported" and err.value.retryable and "tool_choice" in err.value.message
    assert to_ollama("ollama", "m", {**body, "tool_choice": "auto"}, False)["tools"] == body["tools"]


async def test_discovery_lists_tags(stack: Stack) -> None:
    status = stack.service.status()["providers"]["ollama"]
    assert status["models"] == ["llama3.2:latest", "qwen2.5-coder:7b"]
    assert status["state"] == "up"


async def test_bare_name_without_tag_routes_to_latest(stack: Stack) -> None:
    raw = await stack.client.chat.completions.with_raw_response.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-omen-model"] == "llama3.2:latest"


async def test_tool_calls_streamed_and_whole(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="", tool_calls=[("get_time", '{"tz": "UTC"}')]))
    stream = await stack.client.chat.completions.create(
        model="ollama/llama3.2:latest",
        messages=[{"role": "user", "content": "time?"}],
        tools=[{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
        stream=True,
    )
    calls, finish = [], None
    async for c in stream:
        calls += c.choices[0].delta.tool_calls or []
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0].function.name == "get_time" and json.loads(calls[0].function.arguments) == {"tz": "UTC"}  # type: ignore[union-attr,arg-type]
    assert calls[0].id and calls[0].index == 0

    stack.ollama.queue(Reply(text="", tool_calls=[("get_time", '{"tz": "CET"}')]))
    done = await stack.client.chat.completions.create(
        model="ollama/llama3.2:latest",
        messages=[{"role": "user", "content": "time?"}],
        tools=[{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
    )
    assert done.choices[0].finish_reason == "tool_calls"
    assert json.loads(done.choices[0].message.tool_calls[0].function.arguments) == {"tz": "CET"}  # type: ignore[index,union-attr]


async def test_length_finish_and_usage(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="truncated", finish_reason="length", prompt_tokens=30, completion_tokens=64))
    done = await stack.client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "go"}], max_tokens=64)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (30, 64, 94)
    assert stack.ollama.seen[-1].body["options"]["num_predict"] == 64
    assert stack.service.hub.recent[-1].cost_usd == 0.0  # local models are free


async def test_missing_model_is_reported(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await stack.client.chat.completions.create(
            model="ollama/not-pulled:1b", messages=[{"role": "user", "content": "hi"}]
        )
    # A model Ollama does not list is refused before anything is sent (and before any state is made).
    assert err.value.code == "model_not_found" and "not served by provider 'ollama'" in err.value.message
    assert "llama3.2:latest" in err.value.message and stack.ollama.seen == []
