"""The whole stack (OmenService in front of the fakes) over plain HTTP and over TLS: every
upstream kind, streamed and not, the translated doors, large bodies, and a tool request
failing over past an Ollama model without tool support (issues 19.3, 21.12, 22.3)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.conftest import Stack, start_stack
from tests.door_util import sse_events
from tests.fakes.base import Reply, fake_vector
from tests.fakes.fake_anthropic import text_reply

MSG = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                           "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]  # fmt: skip
MB = 1024 * 1024


@pytest.fixture(params=["http", "tls"])
async def code_stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The stack with the shipped order for code (Ollama first, then the cloud)."""
    intents = {"code": ["ollama/*", "anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini"]}
    async for s in start_stack(tmp_path, tls=request.param == "tls", intents=intents):
        yield s


def test_the_tls_stack_really_is_tls(any_stack: Stack) -> None:
    urls = [any_stack.ollama.url, any_stack.openai.url, any_stack.anthropic.url]
    scheme = urls[0].split(":")[0]
    assert scheme in ("http", "https") and all(u.startswith(scheme + "://") for u in urls)
    providers = any_stack.service.status()["providers"]
    assert all(providers[p]["base_url"].startswith(scheme + "://") for p in ("ollama", "openai", "anthropic"))


@pytest.mark.parametrize("model", ["ollama/llama3.2", "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"])
async def test_every_upstream_kind_answers_whole_and_streamed(any_stack: Stack, model: str) -> None:
    provider = model.split("/")[0]
    if provider == "anthropic":
        any_stack.anthropic.enqueue(text_reply("whole"), text_reply(["str", "eamed"]))
    else:
        fake = any_stack.ollama if provider == "ollama" else any_stack.openai
        fake.queue(Reply(text="whole"), Reply(text="streamed"))
    raw = await any_stack.client.chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content == "whole" and raw.headers["x-omen-provider"] == provider
    stream = await any_stack.client.chat.completions.create(model=model, messages=MSG, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "streamed"


async def test_the_messages_door_and_text_completions_over_the_transport(any_stack: Stack) -> None:
    any_stack.anthropic.enqueue(text_reply(["from ", "claude"]))
    body = {"model": "anthropic/claude-haiku-4-5", "max_tokens": 50, "stream": True, "messages": MSG}
    async with aiohttp.ClientSession() as http, http.post(
        f"{any_stack.base}/v1/messages", json=body, headers=any_stack.auth()
    ) as resp:
        assert resp.status == 200
        events = sse_events(await resp.read())
    text = "".join(e[1]["delta"].get("text", "") for e in events if e[0] == "content_block_delta")
    assert text == "from claude"
    any_stack.ollama.queue(Reply(text="def f(): pass"))
    stream = await any_stack.client.completions.create(model="ollama/qwen2.5-coder:7b", prompt="def", stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == "def f(): pass"


async def test_64_embeddings_through_ollama(any_stack: Stack) -> None:
    """About 620 KB of answer (once, past ~300 KB, a plain-HTTP answer never finished)."""
    inputs = [f"input number {i}" for i in range(64)]
    answer = {"embeddings": [fake_vector(t, 512) for t in inputs]}
    assert len(json.dumps(answer)) > 600_000
    raw = await any_stack.client.embeddings.with_raw_response.create(model="auto", input=inputs, dimensions=512, encoding_format="float")
    assert raw.headers["x-omen-provider"] == "ollama"
    result = raw.parse()
    assert [d.embedding for d in result.data] == answer["embeddings"]


@pytest.mark.parametrize("model", ["ollama/llama3.2", "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"])
async def test_a_2_mb_answer_passes_and_a_10_mb_one_is_refused(any_stack: Stack, model: str) -> None:
    provider = model.split("/")[0]
    two, ten = "y" * (2 * MB), "z" * (10 * MB)
    if provider == "anthropic":
        any_stack.anthropic.enqueue(text_reply(two), text_reply(ten))
    else:
        fake = any_stack.ollama if provider == "ollama" else any_stack.openai
        fake.queue(Reply(text=two), Reply(text=ten))
    done = await any_stack.client.chat.completions.create(model=model, messages=MSG)
    assert done.choices[0].message.content == two
    with pytest.raises(openai.APIStatusError) as err:
        await any_stack.client.chat.completions.create(model=model, messages=MSG)
    assert err.value.status_code == 502 and "larger than 8 MB" in err.value.message
    again = await any_stack.client.chat.completions.create(model=model, messages=MSG)  # still serving
    assert again.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_auto_code_with_tools_fails_over_past_ollama_models_without_tool_support(code_stack: Stack, stream: bool) -> None:
    """Ollama answers 400 "... does not support tools" for such a model: the next candidate
    answers, and the refusal counts against nobody's health (issue 19.3)."""
    stack = code_stack
    stack.ollama.no_tools = set(stack.ollama.models)
    stack.anthropic.enqueue(text_reply("from claude"))
    if stream:
        chunks = await stack.client.chat.completions.create(model="auto-code", messages=MSG, tools=TOOLS, stream=True)  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    else:
        done = await stack.client.chat.completions.create(model="auto-code", messages=MSG, tools=TOOLS)  # type: ignore[arg-type]
        text = done.choices[0].message.content or ""
    assert text == "from claude"
    refused = [s for s in stack.ollama.seen if s.path == "/api/chat"]
    assert len(refused) == len(stack.ollama.models) and all(s.body["tools"] for s in refused)
    health = stack.service.status()["providers"]["ollama"]
    assert health["state"] == "up"
    for model in stack.ollama.models:
        assert health["model_health"].get(model, {}).get("error_rate", 0) == 0
    # without tools the same models answer at once
    stack.ollama.queue(Reply(text="local"))
    plain = await stack.client.chat.completions.create(model="auto-code", messages=MSG)
    assert plain.choices[0].message.content == "local"


async def test_a_model_without_tool_support_rests_for_tool_requests_only(code_stack: Stack) -> None:
    """Issue 19.3: once Ollama said a model cannot take tools, the next tool request goes to
    a model that can at once (no second refusal); requests without tools still go to it."""
    stack = code_stack
    stack.ollama.no_tools = set(stack.ollama.models)
    stack.anthropic.enqueue(text_reply("first"), text_reply("second"))
    for expected in ("first", "second"):
        done = await stack.client.chat.completions.create(model="auto-code", messages=MSG, tools=TOOLS)  # type: ignore[arg-type]
        assert done.choices[0].message.content == expected
    refused = [s for s in stack.ollama.seen if s.path == "/api/chat"]
    assert len(refused) == len(stack.ollama.models)  # each asked once, by the first request only
    stack.ollama.queue(Reply(text="local"))
    plain = await stack.client.chat.completions.create(model="auto-code", messages=MSG)
    assert plain.choices[0].message.content == "local"


async def test_the_messages_door_with_tools_fails_over_past_ollama_models_without_tool_support(code_stack: Stack) -> None:
    """Claude Code's path: /v1/messages, streamed, with tools, model auto-code."""
    stack = code_stack
    stack.ollama.no_tools = set(stack.ollama.models)
    stack.anthropic.enqueue(text_reply("from claude"))
    body = {
        "model": "auto-code", "max_tokens": 100, "stream": True, "messages": MSG,
        "tools": [{"name": "read_file", "description": "Read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
    }  # fmt: skip
    async with aiohttp.ClientSession() as http, http.post(f"{stack.base}/v1/messages", json=body, headers=stack.auth()) as resp:
        assert resp.status == 200
        assert resp.headers["x-omen-provider"] == "anthropic"
        events = sse_events(await resp.read())
    assert "".join(e[1]["delta"].get("text", "") for e in events if e[0] == "content_block_delta") == "from claude"
    assert stack.anthropic.last.body["tools"][0]["name"] == "read_file"
