"""POST /v1/responses end to end: the official openai SDK against OMEN, routed to each upstream kind."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from omen_local.server.responses_store import ResponseStore
from tests import door_util as du
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import http_error, text_reply, tool_reply
from tests.waiting import new_post

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
MODELS = {
    "ollama": "ollama/llama3.2:latest",
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def queue_text(stack: Stack, provider: str, text: str, **kw: Any) -> tuple[int, int]:
    if provider == "anthropic":
        stack.anthropic.enqueue(text_reply(text, input_tokens=40, output_tokens=9))
        return 40, 9
    fake = stack.ollama if provider == "ollama" else stack.openai
    fake.queue(Reply(text=text, pieces=3, prompt_tokens=23, completion_tokens=6, **kw))
    return 23, 6


def queue_tool(stack: Stack, provider: str, args: dict[str, Any]) -> None:
    if provider == "anthropic":
        stack.anthropic.enqueue(tool_reply("get_weather", args, parts=4))
    elif provider == "openai":
        stack.openai.queue(Reply(text="", tool_calls=[("get_weather", json.dumps(args))], finish_reason="tool_calls"))
    else:
        stack.ollama.queue(Reply(text="", tool_calls=[("get_weather", json.dumps(args))]))


def last_body(stack: Stack, provider: str) -> dict[str, Any]:
    if provider == "anthropic":
        return stack.anthropic.last.body  # type: ignore[no-any-return]
    fake = stack.ollama if provider == "ollama" else stack.openai
    return fake.seen[-1].body  # type: ignore[no-any-return]


def collapse(types: list[str]) -> list[str]:
    """Event types with runs of the same delta event collapsed to one."""
    out: list[str] = []
    for t in types:
        if not (out and out[-1] == t and t.endswith(".delta")):
            out.append(t)
    return out


# ---------------------------------------------------------------- each upstream kind


@pytest.mark.parametrize("provider", list(MODELS))
async def test_create_routed_to_each_upstream_with_usage_and_cost(stack: Stack, provider: str) -> None:
    prompt, completion = queue_text(stack, provider, "Bonjour!")
    raw = await stack.client.responses.with_raw_response.create(model=MODELS[provider], input="Say hello", instructions="Be brief.")
    response = raw.parse()
    assert response.output_text == "Bonjour!" and response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_") and response.instructions == "Be brief."
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (prompt, completion)
    assert raw.headers["x-omen-provider"] == provider
    sent = last_body(stack, provider)
    if provider == "anthropic":
        assert sent["system"] == "Be brief." and sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
    else:
        assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    du.assert_cost(stack, await du.usage_event(stack, raw.headers["x-omen-request-id"]), prompt, completion)
    await du.assert_usage_row(stack, raw.headers["x-omen-request-id"], provider, prompt, completion)


@pytest.mark.parametrize("provider", list(MODELS))
async def test_stream_typed_events_in_order(stack: Stack, provider: str) -> None:
    prompt, completion = queue_text(stack, provider, "one two three")
    async with stack.client.responses.stream(model=MODELS[provider], input="count") as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    assert collapse([e.type for e in events]) == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"  # type: ignore[union-attr]
    assert final.output_text == "one two three" and final.status == "completed"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (prompt, completion)
    assert events[0].response.id == final.id  # type: ignore[union-attr]


async def test_create_with_stream_true_and_wire_event_names(stack: Stack) -> None:
    stream = await stack.client.responses.create(model="auto", input="hi", stream=True)
    types = [event.type async for event in stream]
    assert collapse(types) == TEXT_EVENTS
    await du.assert_usage_row(stack, stream.response.headers["x-omen-request-id"], "ollama", 11, 7)
    status, headers, body = await du.post(stack, "/v1/responses", {"model": "auto", "input": "hi", "stream": True})
    events = du.sse_events(body)
    assert status == 200 and headers["x-omen-provider"] == "ollama"
    assert all(name == data["type"] for name, data in events)
    assert events[-1][1]["response"]["usage"]["total_tokens"] == 18


# ---------------------------------------------------------------- tools


@pytest.mark.parametrize("provider", list(MODELS))
async def test_tool_round_trip_with_streamed_arguments(stack: Stack, provider: str) -> None:
    args = {"city": "Paris", "units": "metric", "days": [1, 2, 3]}
    queue_tool(stack, provider, args)
    async with stack.client.responses.stream(model=MODELS[provider], input="Weather in Paris?", tools=[WEATHER]) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]  # type: ignore[union-attr]
    assert json.loads("".join(deltas)) == args
    if provider != "ollama":  # Ollama sends a call's arguments whole
        assert len(deltas) > 1
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(done[0].arguments) == args  # type: ignore[union-attr]
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == args and call.call_id
    sent = last_body(stack, provider)
    assert (sent["tools"][0].get("name") or sent["tools"][0]["function"]["name"]) == "get_weather"

    # Stateless second turn: the client sends the call and its output back as items.
    queue_text(stack, provider, "Sunny.")
    again = await stack.client.responses.create(
        model=MODELS[provider],
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert again.output_text == "Sunny."
    sent = last_body(stack, provider)
    if provider == "anthropic":
        assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": call.call_id, "name": "get_weather", "input": args}]
        assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny, 21C"}]
    elif provider == "openai":
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}
    else:
        assert sent["messages"][2] == {"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"}

    # Stateful second turn: previous_response_id brings the call back.
    queue_text(stack, provider, "Still sunny.")
    chained = await stack.client.responses.create(
        model=MODELS[provider],
        tools=[WEATHER],
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 22C"}],
    )
    assert chained.output_text == "Still sunny." and chained.previous_response_id == final.id
    sent = last_body(stack, provider)
    if provider == "openai":
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == call.arguments


async def test_request_fields_reach_the_upstream(stack: Stack) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    await stack.client.responses.create(
        model=MODELS["openai"],
        input=[
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"}]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=55,
        temperature=0.4,
        top_p=0.9,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        reasoning={"effort": "low"},
        metadata={"k": "v"},
        user="u-7",
        store=False,
    )
    sent = stack.openai.seen[-1].body
    assert sent["messages"][0] == {"role": "developer", "content": "Answer in JSON."}
    assert sent["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}
    assert sent["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["parameters"]}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}} and sent["parallel_tool_calls"] is False
    assert (sent["max_completion_tokens"], sent["temperature"], sent["top_p"], sent["user"]) == (55, 0.4, 0.9, "u-7")
    assert "reasoning_effort" not in sent  # gpt-4o-mini would refuse it (providers/capabilities.py)
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    for key in ("store", "metadata", "text", "input", "instructions", "omen"):
        assert key not in sent


async def test_aliases_and_hint_headers_work_on_this_door(stack: Stack) -> None:
    raw = await stack.client.responses.with_raw_response.create(model="auto-code", input="hi")
    assert (raw.headers["x-omen-alias"], raw.headers["x-omen-provider"]) == ("auto-code", "anthropic")
    assert raw.parse().model == "claude-sonnet-4-5"
    raw = await stack.client.responses.with_raw_response.create(model="auto", input="hi", extra_headers={"x-omen-providers": "openai"})
    assert raw.headers["x-omen-provider"] == "openai" and float(raw.headers["x-omen-cost-usd"]) > 0


# ---------------------------------------------------------------- store and previous_response_id


async def test_store_is_per_user_and_store_false_keeps_nothing(stack: Stack) -> None:
    kept = await stack.client.responses.create(model="auto", input="remember me")
    assert (await stack.client.responses.retrieve(kept.id)).output_text == kept.output_text
    gone = await stack.client.responses.create(model="auto", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        await stack.client.responses.retrieve(gone.id)
    with pytest.raises(openai.BadRequestError) as err:
        await stack.client.responses.create(model="auto", input="go on", previous_response_id=gone.id)
    assert err.value.code == "previous_response_not_found" and err.value.param == "previous_response_id"

    other = openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key=stack.service.tokens.create("mallory"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(kept.id)
    with pytest.raises(openai.BadRequestError):
        await other.responses.create(model="auto", input="go on", previous_response_id=kept.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(kept.id)
    await other.close()

    await stack.client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        await stack.client.responses.retrieve(kept.id)


def test_store_is_bounded_by_time_count_and_size() -> None:
    now = [0.0]
    store = ResponseStore(max_entries=3, max_bytes=10_000, ttl_s=60, clock=lambda: now[0])
    for i in range(4):
        assert store.put("u", f"r{i}", {"id": f"r{i}"}, [{"role": "user", "content": "x"}])
    assert len(store) == 3 and store.get("u", "r0") is None  # the least recently used went
    assert store.get("u", "r1") is not None  # r1 is now the most recently used
    store.put("u", "r4", {"id": "r4"}, [])
    assert store.get("u", "r2") is None and store.get("u", "r1") is not None
    assert store.get("someone-else", "r1") is None
    assert not store.put("u", "huge", {"id": "huge"}, [{"content": "x" * 20_000}])
    store.put("u", "big", {"id": "big"}, [{"content": "x" * 9_960}])
    assert store.bytes <= 10_000 and store.get("u", "big") is not None and len(store) == 1
    now[0] = 61.0
    assert store.get("u", "big") is None and store.bytes == 0


# ---------------------------------------------------------------- failures


async def test_failover_before_the_first_token(stack: Stack) -> None:
    stack.anthropic.enqueue(http_error(500))
    stream = await stack.client.responses.create(model="auto", input="hi", stream=True, extra_body={"omen": {"intent": "code"}})
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello from the fake upstream."  # type: ignore[union-attr]
    request_id = stream.response.headers["x-omen-request-id"]
    assert stream.response.headers["x-omen-provider"] == "openai"
    assert (await du.usage_event(stack, request_id, outcome="error")).provider == "anthropic"
    du.assert_cost(stack, await du.usage_event(stack, request_id), 11, 7)


@pytest.mark.parametrize("cut", ["fail_after", "cut_after"])
async def test_mid_stream_failure_is_failed_never_completed(stack: Stack, cut: str) -> None:
    stack.ollama.queue(Reply(text="a b c d e f", pieces=6, **{cut: 2}))
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        async with stack.client.responses.stream(model="auto", input="hi") as stream:
            types = [e.type async for e in stream]
            await stream.get_final_response()
    assert types[-2:] == ["error", "response.failed"] and "response.completed" not in types
    stack.ollama.queue(Reply(text="a b c d e f", pieces=6, **{cut: 2}))
    events = [e async for e in await stack.client.responses.create(model="auto", input="hi", stream=True)]
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"  # type: ignore[union-attr]
    assert failed.response.error is not None and "incomplete" in failed.response.error.message  # type: ignore[union-attr]


async def test_length_finish_is_incomplete(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="trunc", finish_reason="length"), Reply(text="trunc", finish_reason="length"))
    response = await stack.client.responses.create(model="auto", input="go", max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    types = [e.type async for e in await stack.client.responses.create(model="auto", input="go", stream=True)]
    assert types[-1] == "response.incomplete"


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_before_the_answer_closes_the_upstream(stack: Stack, stream: bool) -> None:
    stack.anthropic.enqueue(text_reply("late", delay=30))
    payload = {"model": MODELS["anthropic"], "input": "hi", "stream": stream}
    closed = await du.post_then_abandon(stack, "/v1/responses", payload, new_post(stack.anthropic.requests))
    assert await stack.anthropic.wait_closed(stack.anthropic.last) - closed < du.LIMIT_S


async def test_client_disconnect_closes_the_upstream(stack: Stack) -> None:
    stack.openai.queue(Reply(text="x" * 200, pieces=100, chunk_delay_s=0.05))
    closed = await du.disconnect_after_first_line(stack, "/v1/responses", {"model": MODELS["openai"], "input": "story", "stream": True})
    seen = stack.openai.seen[-1]
    assert await stack.openai.wait_closed(seen) - closed < du.LIMIT_S
    assert not seen.finished


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"input": "hi"}, "model"),
    ({"model": "auto"}, "input"),
    ({"model": "auto", "input": ""}, "input"),
    ({"model": "auto", "input": "hi", "tools": [{"name": "x"}]}, "tools[0].type"),
    ({"model": "auto", "input": "hi", "tools": [{"type": "namespace", "name": "ns"}]}, "tools[0].tools"),
    ({"model": "auto", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "auto", "input": "hi", "background": True}, "background"),
    ({"model": "auto", "input": "hi", "conversation": "conv_1"}, "conversation"),
    ({"model": "auto", "input": "hi", "include": [7]}, "include[0]"),
    ({"model": "auto", "input": "hi", "reasoning": {"summary": "verbose"}}, "reasoning.summary"),
    ({"model": "auto", "input": "hi", "text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"model": "auto", "input": "hi", "top_logprobs": 3}, "top_logprobs"),
    ({"model": "auto", "input": "hi", "frobnicate": 1}, "frobnicate"),
    ({"model": "auto", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "auto", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "input[0].content[0].image_url"),
    ({"model": "auto", "input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, "input[0].content[0].type"),
    ({"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "auto", "input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": "auto", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "auto", "input": "hi", "temperature": 3}, "temperature"),
    ({"model": "auto", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "auto", "input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"model": "auto", "input": "hi", "omen": {"k": 99}}, "omen.k"),
    ({"model": "auto", "input": "hi", "store": "yes"}, "store"),
]


async def test_unsupported_and_bad_fields_are_400_naming_them(stack: Stack) -> None:
    for payload, param in BAD_FIELDS:
        status, _, body = await du.post(stack, "/v1/responses", payload)
        err = json.loads(body)["error"]
        assert status == 400 and err["param"] == param and err["type"] == "invalid_request_error", (payload, err)


async def test_auth_and_unknown_model(stack: Stack) -> None:
    bad = openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.responses.create(model="auto", input="hi")
    await bad.close()
    with pytest.raises(openai.NotFoundError) as nf:
        await stack.client.responses.create(model="no-such-model", input="hi")
    assert nf.value.code == "model_not_found"
