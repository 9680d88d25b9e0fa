"""POST /v1/messages end to end: the official anthropic SDK against OMEN, routed to each upstream kind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from omen_local import estimate
from tests import door_util as du
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import (
    COUNT_FIELDS,
    Text,
    Thinking,
    fake_token_count,
    http_error,
    text_reply,
    tool_reply,
)
from tests.fakes.fake_anthropic import Reply as AReply
from tests.waiting import new_post

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
USER = [{"role": "user", "content": "Weather in Paris?"}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
MODELS = {
    "ollama": "ollama/llama3.2:latest",
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
}


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=stack.base, api_key=stack.token, max_retries=0)
    yield client
    await client.close()


def queue_text(stack: Stack, provider: str, text: str) -> tuple[int, int]:
    """Script ``text`` on ``provider``; return the (prompt, completion) tokens it will report."""
    if provider == "anthropic":
        stack.anthropic.enqueue(text_reply(text, input_tokens=40, output_tokens=9))
        return 40, 9
    fake = stack.ollama if provider == "ollama" else stack.openai
    fake.queue(Reply(text=text, pieces=3, prompt_tokens=23, completion_tokens=6))
    return 23, 6


def queue_tool(stack: Stack, provider: str, args: dict[str, Any]) -> None:
    if provider == "anthropic":
        stack.anthropic.enqueue(tool_reply("get_weather", args, text="Let me check.", parts=4))
    elif provider == "openai":
        stack.openai.queue(Reply(text="Let me check.", tool_calls=[("get_weather", json.dumps(args))], finish_reason="tool_calls"))
    else:
        stack.ollama.queue(Reply(text="Let me check.", tool_calls=[("get_weather", json.dumps(args))]))


def last_body(stack: Stack, provider: str) -> dict[str, Any]:
    if provider == "anthropic":
        return stack.anthropic.last.body  # type: ignore[no-any-return]
    fake = stack.ollama if provider == "ollama" else stack.openai
    return fake.seen[-1].body  # type: ignore[no-any-return]


# ---------------------------------------------------------------- plain answers, each upstream kind


@pytest.mark.parametrize("provider", list(MODELS))
async def test_create_routed_to_each_upstream_with_usage_and_cost(stack: Stack, sdk: anthropic.AsyncAnthropic, provider: str) -> None:
    prompt, completion = queue_text(stack, provider, "Bonjour from upstream.")
    raw = await sdk.messages.with_raw_response.create(model=MODELS[provider], max_tokens=100, messages=[{"role": "user", "content": "Say hello"}])
    message = await raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Bonjour from upstream."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.role == "assistant" and message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, completion)
    assert raw.headers["x-omen-provider"] == provider and raw.headers["request-id"] == raw.headers["x-omen-request-id"]
    event = await du.usage_event(stack, raw.headers["x-omen-request-id"])
    assert event.provider == provider
    du.assert_cost(stack, event, prompt, completion)
    await du.assert_usage_row(stack, raw.headers["x-omen-request-id"], provider, prompt, completion)


@pytest.mark.parametrize("provider", list(MODELS))
async def test_stream_events_in_anthropics_order(stack: Stack, sdk: anthropic.AsyncAnthropic, provider: str) -> None:
    prompt, completion = queue_text(stack, provider, "one two three")
    async with sdk.messages.stream(model=MODELS[provider], max_tokens=100, messages=[{"role": "user", "content": "count"}]) as stream:
        types = [event.type async for event in stream]
        message = await stream.get_final_message()
    raw_types = [t for t in types if t not in ("text", "input_json", "thinking")]  # the SDK's own helper events
    assert raw_types[0] == "message_start" and raw_types[1] == "content_block_start"
    assert raw_types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw_types[2:-3]) == {"content_block_delta"}
    assert message.content[0].text == "one two three"  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, completion)
    assert message.model == MODELS[provider].split("/", 1)[1]
    await du.assert_usage_row(stack, stream.response.headers["x-omen-request-id"], provider, prompt, completion)


async def test_stream_wire_format_has_ping_and_named_events(stack: Stack) -> None:
    status, headers, body = await du.post(
        stack, "/v1/messages", {"model": "auto", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = du.sse_events(body)
    assert [e for e, _ in events][:2] == ["message_start", "ping"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["input_tokens"] == 11 and delta["usage"]["output_tokens"] == 7


# ---------------------------------------------------------------- tools


@pytest.mark.parametrize("provider", list(MODELS))
async def test_tool_round_trip_with_streamed_arguments(stack: Stack, sdk: anthropic.AsyncAnthropic, provider: str) -> None:
    args = {"city": "Paris", "units": "metric", "days": [1, 2, 3]}
    queue_tool(stack, provider, args)
    async with sdk.messages.stream(model=MODELS[provider], max_tokens=200, tools=[WEATHER], messages=USER) as stream:
        pieces = [e.partial_json async for e in stream if e.type == "input_json"]  # type: ignore[union-attr]
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == args and tool.id
    assert json.loads("".join(pieces)) == args
    if provider != "ollama":  # Ollama sends a call's arguments whole
        assert len([p for p in pieces if p]) > 1
    sent = last_body(stack, provider)
    tools = sent["tools"]
    if provider == "anthropic":
        assert tools[0]["name"] == "get_weather" and tools[0]["input_schema"] == WEATHER["input_schema"]
    else:
        assert tools[0]["function"]["name"] == "get_weather" and tools[0]["function"]["parameters"] == WEATHER["input_schema"]

    # Second turn: the tool result goes back; the upstream sees its own shape of it.
    queue_text(stack, provider, "Sunny in Paris.")
    done = await sdk.messages.create(
        model=MODELS[provider],
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            *USER,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "sunny, 21C"}, {"type": "text", "text": "Thanks"}]},
        ],
    )
    assert done.content[0].text == "Sunny in Paris."  # type: ignore[union-attr]
    sent = last_body(stack, provider)
    if provider == "anthropic":
        assert sent["messages"][1]["content"][-1] == {"type": "tool_use", "id": tool.id, "name": "get_weather", "input": args}
        assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": tool.id, "content": "sunny, 21C"}
        assert sent["messages"][2]["content"][1] == {"type": "text", "text": "Thanks"}
    elif provider == "openai":
        call = sent["messages"][1]["tool_calls"][0]
        assert call["id"] == tool.id and json.loads(call["function"]["arguments"]) == args
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": tool.id, "content": "sunny, 21C"}
        assert sent["messages"][3] == {"role": "user", "content": "Thanks"}
    else:
        assert sent["messages"][1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": args}}]
        assert sent["messages"][2] == {"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"}


async def test_tool_choice_and_parallel_flag_reach_the_upstream(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    stack.anthropic.enqueue(tool_reply("get_weather", {"city": "Oslo"}))
    await sdk.messages.create(
        model=MODELS["anthropic"],
        max_tokens=50,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=USER,
    )
    assert stack.anthropic.last.body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    await sdk.messages.create(model=MODELS["openai"], max_tokens=50, tools=[WEATHER], tool_choice={"type": "any"}, messages=USER)
    sent = stack.openai.seen[-1].body
    assert sent["tool_choice"] == "required" and "parallel_tool_calls" not in sent


# ---------------------------------------------------------------- what reaches the upstream


async def test_system_images_sampling_and_metadata_reach_each_upstream(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    request: dict[str, Any] = {
        "max_tokens": 77,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            }
        ],
        "extra_body": {"temperature": 0.3, "top_k": 5},  # this SDK has dropped the sampling arguments
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
    }
    await sdk.messages.create(model=MODELS["anthropic"], **request)
    sent = stack.anthropic.last.body
    assert sent["system"] == [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"], sent["stop_sequences"]) == (77, 0.3, 5, ["END"])
    assert sent["metadata"] == {"user_id": "u-42"}

    await sdk.messages.create(model=MODELS["ollama"], **request)
    sent = stack.ollama.seen[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["images"] == [PNG]
    assert sent["options"] == {"temperature": 0.3, "top_k": 5, "num_predict": 77, "stop": ["END"]}

    await sdk.messages.create(model=MODELS["openai"], **request)
    sent = stack.openai.seen[-1].body
    assert sent["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert (sent["max_completion_tokens"], sent["stop"], sent["user"]) == (77, ["END"], "u-42")
    assert "omen" not in sent and "max_tokens" not in sent


async def test_thinking_blocks_when_asked_for(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    stack.anthropic.enqueue(AReply([Thinking("Hmm, weather."), Text("Sunny.")]), AReply([Thinking("Hmm."), Text("Sunny.")]))
    async with sdk.messages.stream(
        model=MODELS["anthropic"], max_tokens=5000, thinking={"type": "enabled", "budget_tokens": 2048}, messages=USER
    ) as stream:
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Hmm, weather."  # type: ignore[union-attr]
    assert stack.anthropic.last.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    plain = await sdk.messages.create(model=MODELS["anthropic"], max_tokens=100, messages=USER)
    assert [b.type for b in plain.content] == ["text"]  # not asked for: no thinking block


async def test_hints_by_omen_object_and_headers(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    raw = await sdk.messages.with_raw_response.create(
        model="auto",
        max_tokens=50,
        messages=USER,
        extra_body={"omen": {"providers": ["openai"], "workspace": "lab"}},
    )
    assert raw.headers["x-omen-provider"] == "openai"
    assert (await du.usage_event(stack, raw.headers["x-omen-request-id"])).workspace == "lab"
    raw = await sdk.messages.with_raw_response.create(model="auto", max_tokens=50, messages=USER, extra_headers={"x-omen-workspace": "hdr"})
    assert raw.headers["x-omen-provider"] == "ollama"
    assert (await du.usage_event(stack, raw.headers["x-omen-request-id"])).workspace == "hdr"
    with pytest.raises(anthropic.BadRequestError) as bad:
        await sdk.messages.create(model="auto", max_tokens=50, messages=USER, extra_body={"omen": {"strategy": "fastest"}})
    assert "omen.strategy" in bad.value.message and bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


async def test_aliases_and_hint_headers_work_on_this_door(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    raw = await sdk.messages.with_raw_response.create(model="auto-code", max_tokens=50, messages=USER)
    assert (raw.headers["x-omen-alias"], raw.headers["x-omen-provider"], raw.headers["x-omen-intent"]) == ("auto-code", "anthropic", "code")
    raw = await sdk.messages.with_raw_response.create(
        model="auto-code", max_tokens=50, messages=USER, extra_headers={"x-omen-providers": "openai"}
    )
    assert raw.headers["x-omen-provider"] == "openai"  # a header hint overrides the alias's candidates
    with pytest.raises(anthropic.BadRequestError) as bad:
        await sdk.messages.create(model="auto", max_tokens=50, messages=USER, extra_headers={"x-omen-k": "99"})
    assert bad.value.body["type"] == "error"  # type: ignore[index]


# ---------------------------------------------------------------- failures


async def test_failover_before_the_first_token(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    stack.anthropic.enqueue(http_error(529))
    async with sdk.messages.stream(model="auto", max_tokens=50, messages=USER, extra_body={"omen": {"intent": "code"}}) as stream:
        message = await stream.get_final_message()
        request_id = stream.response.headers["x-omen-request-id"]
    assert message.content[0].text == "Hello from the fake upstream."  # type: ignore[union-attr]
    assert stream.response.headers["x-omen-provider"] == "openai"
    failed = await du.usage_event(stack, request_id, outcome="error")
    assert failed.provider == "anthropic"
    du.assert_cost(stack, await du.usage_event(stack, request_id), 11, 7)


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_mid_stream_failure_is_an_error_event_never_a_clean_end(stack: Stack, sdk: anthropic.AsyncAnthropic, provider: str) -> None:
    fake = stack.ollama if provider == "ollama" else stack.openai
    fake.queue(Reply(text="a b c d e f", pieces=6, fail_after=2))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        async with sdk.messages.stream(model=MODELS[provider], max_tokens=50, messages=USER) as stream:
            async for event in stream:
                seen.append(event.type)
    assert "incomplete" in str(err.value)
    assert "message_stop" not in seen and "message_delta" not in seen and "content_block_delta" in seen

    fake.queue(Reply(text="a b c d e f", pieces=6, cut_after=2))
    status, _, body = await du.post(stack, "/v1/messages", {"model": MODELS[provider], "max_tokens": 9, "stream": True, "messages": USER})
    events = du.sse_events(body)
    assert status == 200 and events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [e for e, _ in events]


async def test_anthropic_upstream_error_event_mid_stream(stack: Stack) -> None:
    stack.anthropic.enqueue(AReply([Text("a b c d")], error_after=2))
    status, _, body = await du.post(stack, "/v1/messages", {"model": MODELS["anthropic"], "max_tokens": 9, "stream": True, "messages": USER})
    names = [e for e, _ in du.sse_events(body)]
    assert status == 200 and names[-1] == "error" and "message_stop" not in names


@pytest.mark.parametrize("provider", ["ollama", "anthropic"])
async def test_client_disconnect_closes_the_upstream(stack: Stack, provider: str) -> None:
    if provider == "ollama":
        stack.ollama.queue(Reply(text="x" * 200, pieces=100, chunk_delay_s=0.05))
    else:
        stack.anthropic.enqueue(text_reply([f"w{i} " for i in range(100)], delta_delay=0.05))
    payload = {"model": MODELS[provider], "max_tokens": 500, "stream": True, "messages": USER}
    closed = await du.disconnect_after_first_line(stack, "/v1/messages", payload)
    if provider == "ollama":
        seen = stack.ollama.seen[-1]
        assert await stack.ollama.wait_closed(seen) - closed < du.LIMIT_S
    else:
        assert await stack.anthropic.wait_closed(stack.anthropic.last) - closed < du.LIMIT_S
    for event in reversed(stack.service.hub.recent):
        if getattr(event, "provider", None) == provider:
            break
    await du.usage_event(stack, event.request_id, outcome="cancelled")  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_before_the_answer_closes_the_upstream(stack: Stack, stream: bool) -> None:
    stack.ollama.queue(Reply(hang=True))
    payload = {"model": MODELS["ollama"], "max_tokens": 50, "stream": stream, "messages": USER}
    closed = await du.post_then_abandon(stack, "/v1/messages", payload, new_post(stack.ollama.seen))
    assert await stack.ollama.wait_closed(stack.ollama.seen[-1]) - closed < du.LIMIT_S
    done = await du.post(stack, "/v1/messages", {**payload, "stream": False})
    assert done[0] == 200  # and the server keeps serving


# ---------------------------------------------------------------- Anthropic-shaped errors


async def test_errors_are_in_anthropics_shape(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        await sdk.messages.create(model="auto", max_tokens=0, messages=USER)
    assert bad.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required: an integer >= 1 (invalid_request)"},
        "request_id": bad.value.response.headers["request-id"],  # every answer, a 400 too, carries its id
    }
    with pytest.raises(anthropic.NotFoundError) as nf:
        await sdk.messages.create(model="no-such-model", max_tokens=10, messages=USER)
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert nf.value.body["request_id"] == nf.value.response.headers["request-id"]  # type: ignore[index]  # routed: it has an id

    for key in ("wrong", ""):
        bad_client = anthropic.AsyncAnthropic(base_url=stack.base, api_key=key or "x", max_retries=0)
        headers = {"x-api-key": ""} if not key else None
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await bad_client.messages.create(model="auto", max_tokens=10, messages=USER, extra_headers=headers)
        assert auth.value.body["type"] == "error" and auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        await bad_client.close()

    bearer = anthropic.AsyncAnthropic(base_url=stack.base, auth_token=stack.token, max_retries=0)
    assert (await bearer.messages.create(model="auto", max_tokens=10, messages=USER)).content
    await bearer.close()


BAD_BODIES: list[tuple[Any, int, str, str]] = [
    (b"{not json", 400, "invalid_request_error", "not valid JSON"),
    (b"[]", 400, "invalid_request_error", "JSON object"),
    ({"model": "auto", "max_tokens": 5}, 400, "invalid_request_error", "messages"),
    ({"model": "auto", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_request_error", "messages[0].role: Input should be 'user' or 'assistant'"),
    ({"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, "invalid_request_error", "at least one user or assistant message"),
    ({"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, 400, "invalid_request_error", "non-empty"),
    ({"model": "auto", "max_tokens": 5, "messages": USER, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400, "invalid_request_error", "tools[0].type"),
    ({"model": "auto", "max_tokens": 5, "messages": USER, "mcp_servers": []}, 400, "invalid_request_error", "mcp_servers"),
    ({"model": "auto", "max_tokens": 5, "messages": USER, "frobnicate": 1}, 400, "invalid_request_error", "frobnicate"),
    ({"model": "auto", "max_tokens": 5, "messages": USER, "temperature": 1.5}, 400, "invalid_request_error", "temperature"),
    ({"model": "auto", "max_tokens": 5000, "messages": USER, "thinking": {"type": "enabled", "budget_tokens": 10}}, 400, "invalid_request_error", "budget_tokens"),
]


async def test_bad_bodies_are_anthropic_400s(stack: Stack) -> None:
    for payload, status, etype, needle in BAD_BODIES:
        raw = payload if isinstance(payload, bytes) else None
        got, headers, body = await du.post(stack, "/v1/messages", payload, raw=raw)
        data = json.loads(body)
        assert got == status and data["type"] == "error" and data["error"]["type"] == etype, (payload, data)
        assert needle in data["error"]["message"], (payload, data)
        assert data.get("request_id") == headers.get("request-id")  # none yet: the body was refused before routing


async def test_edge_errors_on_this_door_are_anthropic_shaped(stack: Stack) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(stack.base + "/v1/messages", headers=stack.auth()) as resp:
            body = await resp.json()
            assert resp.status == 405 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        async with http.post(stack.base + "/v1/messages", json={}, headers={"Origin": "https://evil.example"}) as resp:
            body = await resp.json()
            assert resp.status == 403 and body["error"]["type"] == "permission_error"
        big = b"x" * (stack.service.config.server.max_body_bytes + 10)
        async with http.post(stack.base + "/v1/messages", data=big, headers=stack.auth()) as resp:
            body = await resp.json()
            assert resp.status == 413 and body["error"]["type"] == "request_too_large"
        async with http.post(stack.base + "/v1/chat/completions", json={}, headers={"x-api-key": "wrong"}) as resp:
            body = await resp.json()
            assert resp.status == 401 and body["error"]["code"] == "invalid_api_key"  # the OpenAI shape elsewhere


# ---------------------------------------------------------------- count_tokens


async def test_count_tokens_is_an_estimate_that_grows_with_the_prompt_and_says_so(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    """Where the model has no way to count (the fake Ollama), an estimate marked as one."""
    raw = await sdk.messages.with_raw_response.count_tokens(model="ollama/llama3.2:latest", messages=[{"role": "user", "content": "hi"}])
    short = await raw.parse()
    assert raw.headers["x-omen-token-count"] == "estimated" and raw.headers["x-omen-provider"] == "ollama"
    long = await sdk.messages.count_tokens(
        model="ollama/llama3.2:latest", system="Be brief. " * 50, tools=[WEATHER], messages=[{"role": "user", "content": "hi " * 400}]
    )
    assert 0 < short.input_tokens < 20 < 300 < long.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError):
        await sdk.messages.count_tokens(model="auto", messages=[])


async def test_count_tokens_with_an_anthropic_upstream_is_anthropics_count(stack: Stack, sdk: anthropic.AsyncAnthropic) -> None:
    """Anthropic's own count_tokens answers, with only the fields that endpoint takes."""
    raw = await sdk.messages.with_raw_response.count_tokens(
        model="claude-haiku-4-5", system="Be brief. " * 50, tools=[WEATHER], messages=[{"role": "user", "content": "hi " * 400}]
    )
    counted = await raw.parse()
    seen = stack.anthropic.last
    assert seen.path == "/v1/messages/count_tokens"
    assert set(seen.body) <= set(COUNT_FIELDS) and "max_tokens" not in seen.body
    assert seen.body["tools"][0]["name"] == "get_weather" and "input_schema" in seen.body["tools"][0]
    assert counted.input_tokens == fake_token_count(seen.body)
    assert counted.input_tokens != estimate.prompt_tokens({"messages": [{"role": "system", "content": "Be brief. " * 50},
                                                                          {"role": "user", "content": "hi " * 400}]})
    assert raw.headers["x-omen-token-count"] == "exact"
    assert (raw.headers["x-omen-provider"], raw.headers["x-omen-model"]) == ("anthropic", "claude-haiku-4-5")


async def test_count_tokens_falls_back_to_a_marked_estimate_when_the_upstream_cannot_count(
    stack: Stack, sdk: anthropic.AsyncAnthropic
) -> None:
    key, stack.anthropic.api_key = stack.anthropic.api_key, "another-key"  # the upstream now answers 401
    try:
        raw = await sdk.messages.with_raw_response.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}])
    finally:
        stack.anthropic.api_key = key
    assert stack.anthropic.last.path == "/v1/messages/count_tokens"
    assert raw.headers["x-omen-token-count"] == "estimated"
    assert (await raw.parse()).input_tokens == estimate.prompt_tokens({"messages": [{"role": "user", "content": "hi"}]})


# ---------------------------------------------------------------- what Claude Code sends (issue 19)

CLAUDE_CODE_TURN: dict[str, Any] = {
    "max_tokens": 32000,
    "thinking": {"type": "adaptive", "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "medium"},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look at the screenshot", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "# Environment\nPlatform: linux"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "", "signature": "sig-from-anthropic"},
            {"type": "tool_use", "id": "toolu_9", "name": "Read", "input": {"file_path": "/tmp/shot.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": [
            {"type": "text", "text": "the screenshot"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]},
    ],
}


@pytest.mark.parametrize("provider", list(MODELS))
async def test_claude_code_turn_reaches_each_upstream_in_its_own_terms(stack: Stack, provider: str) -> None:
    queue_text(stack, provider, "I see it.")
    got, _, body = await du.post(stack, "/v1/messages", {"model": MODELS[provider], **CLAUDE_CODE_TURN},
                                       headers={"anthropic-beta": "claude-code-20250219,some-future-beta-2099-01-01"})  # fmt: skip
    assert got == 200, body
    sent = last_body(stack, provider)
    blob = json.dumps(sent)
    if provider == "anthropic":
        # Passed on with the beta it needs (the fake refuses it without); the client's other
        # betas are not forwarded (unknown ones ignored, not refused).
        assert sent["context_management"] == CLAUDE_CODE_TURN["context_management"]
        assert stack.anthropic.last.headers["anthropic-beta"] == "context-management-2025-06-27"
        assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
        assert assistant["content"][0] == {"type": "thinking", "thinking": "", "signature": "sig-from-anthropic"}
        assert "<system-reminder>\\n# Environment" in blob  # folded in place, not hoisted
        assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
        return
    assert "cache_control" not in blob and "sig-from-anthropic" not in blob
    assert "context_management" not in blob  # nothing to clear: thinking is not sent there
    roles = [m["role"] for m in sent["messages"]]
    assert "system" in roles[1:2]  # a system message at that point
    if provider == "openai":
        tool = next(m for m in sent["messages"] if m["role"] == "tool")
        assert isinstance(tool["content"], str) and tool["content"].startswith("the screenshot")
        after = sent["messages"][sent["messages"].index(tool) + 1]
        assert after["role"] == "user" and any(p["type"] == "image_url" for p in after["content"])
        assert "reasoning_effort" not in sent  # gpt-4o-mini would refuse it
