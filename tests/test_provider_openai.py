"""OpenAI-compatible upstreams: pass-through, error bodies, mid-stream failures."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from omen_local.config import ProviderConfig
from omen_local.providers.base import UpstreamError
from omen_local.providers.openai_compat import OpenAICompatProvider
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI

MSG = [{"role": "user", "content": "hi"}]


async def test_adapter_maps_error_bodies_and_retry_after() -> None:
    async with FakeOpenAI() as fake, aiohttp.ClientSession() as http:
        cfg = ProviderConfig(name="openai", kind="openai", base_url=f"{fake.url}/v1")
        p = OpenAICompatProvider(cfg, http, key=FakeOpenAI.api_key)
        fake.queue(Reply(status=429, error_message="Rate limit reached for gpt-4o-mini", headers={"retry-after-ms": "1500"}))
        with pytest.raises(UpstreamError) as err:
            await p.complete("gpt-4o-mini", {"messages": MSG})
        assert err.value.status == 429 and err.value.retry_after == 1.5 and err.value.retryable
        assert "Rate limit reached" in err.value.message

        wrong = OpenAICompatProvider(cfg, http, key="sk-wrong-key")
        with pytest.raises(UpstreamError) as err:
            await wrong.complete("gpt-4o-mini", {"messages": MSG})
        assert err.value.status == 401 and "Incorrect API key" in err.value.message
        assert "sk-wrong-key" not in err.value.message

        fake.queue(Reply(text="abcdef", pieces=3, fail_after=1, error_message="The server had an error"))
        got = []
        with pytest.raises(UpstreamError) as err:
            async for chunk in p.stream("gpt-4o-mini", {"messages": MSG}):
                got.append(chunk.delta.get("content"))
        assert err.value.kind == "midstream" and "The server had an error" in err.value.message
        assert "ab" in got

        fake.queue(Reply(text="abcdef", pieces=3, cut_after=1))
        with pytest.raises(UpstreamError) as err:
            async for _ in p.stream("gpt-4o-mini", {"messages": MSG}):
                pass
        assert err.value.kind == "midstream"


async def test_passthrough_keeps_unknown_fields_and_tools(stack: Stack) -> None:
    stack.openai.queue(Reply(text="", tool_calls=[("lookup", '{"q": "omen"}')], finish_reason="tool_calls"))
    done = await stack.client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MSG,
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        response_format={"type": "json_object"},
        user="someone",
        extra_body={"logit_bias": {"50256": -100}},
    )
    assert done.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index,union-attr]
    sent = stack.openai.seen[-1].body
    assert sent["logit_bias"] == {"50256": -100} and sent["user"] == "someone"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["response_format"] == {"type": "json_object"}


async def test_streamed_tool_call_deltas_pass_through(stack: Stack) -> None:
    stack.openai.queue(Reply(text="", tool_calls=[("lookup", '{"q": "omen local"}')], finish_reason="tool_calls"))
    stream = await stack.client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MSG,
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        stream=True,
    )
    args = ""
    async for c in stream:
        for tc in c.choices[0].delta.tool_calls or []:
            args += (tc.function.arguments if tc.function else "") or ""
    assert args == '{"q": "omen local"}'


async def test_openai_midstream_failure_through_omen(stack: Stack) -> None:
    stack.openai.queue(Reply(text="abcdef", pieces=3, fail_after=1))
    stream = await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
    with pytest.raises(openai.APIError) as err:
        async for _ in stream:
            pass
    assert err.value.body["code"] == "upstream_stream_error"  # type: ignore[index]


def test_proxy_from_environment_is_read_once_and_skips_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    from omen_local.providers.base import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.corp:3128"
    assert env_proxy("https://llm.internal.example/v1") is None
    assert env_proxy("http://127.0.0.1:11434") is None
    assert env_proxy("http://localhost:1234/v1") is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert env_proxy("https://api.openai.com/v1") is None


def test_reasoning_effort_goes_only_to_models_that_take_it() -> None:
    """OpenAI refuses reasoning_effort on non-reasoning models; the config's flag wins over the name."""
    from omen_local.config import ModelSpec, ProviderConfig
    from omen_local.providers.capabilities import takes_reasoning_effort

    plain = ProviderConfig(name="openai", kind="openai", base_url="https://api.openai.com/v1")
    assert takes_reasoning_effort(plain, "o4-mini") and takes_reasoning_effort(plain, "gpt-5.1-codex")
    assert not takes_reasoning_effort(plain, "gpt-4o-mini") and not takes_reasoning_effort(plain, "llama3.2")
    flagged = ProviderConfig(name="box", kind="openai", base_url="http://127.0.0.1:1/v1",
                             models=(ModelSpec("my-thinker", reasoning=True), ModelSpec("o3-lite", reasoning=False)))  # fmt: skip
    assert takes_reasoning_effort(flagged, "my-thinker") and not takes_reasoning_effort(flagged, "o3-lite")
