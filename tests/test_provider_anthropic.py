"""The Anthropic adapter: pure translation both ways, then real HTTP against FakeAnthropic.

The last tests point the official ``anthropic`` SDK at the fake, which is what makes the
fake's bytes (and so the adapter tests) trustworthy.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from omen_local.config import ProviderConfig
from omen_local.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    StreamTranslator,
    finish_reason,
    from_anthropic_message,
    to_anthropic,
    usage_from_anthropic,
)
from omen_local.providers.base import Chunk, Timeouts, UpstreamError
from tests.fakes.fake_anthropic import (
    FakeAnthropic,
    Reply,
    Text,
    Thinking,
    ToolUse,
    http_error,
    text_reply,
    tool_reply,
)

KEY = "sk-ant-test-123"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def unsupported(body: dict[str, Any]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        to_anthropic("anthropic", "claude", body, False)
    assert info.value.kind == "unsupported" and info.value.status == 400 and info.value.retryable
    return info.value


# ---------------------------------------------------------------- request translation


def test_minimal_request_defaults_max_tokens() -> None:
    out = to_anthropic("anthropic", "claude-haiku-4-5", user("hi"), False)
    assert out == {
        "model": "claude-haiku-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert to_anthropic("anthropic", "m", user("hi"), True)["stream"] is True


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert to_anthropic("a", "m", {**user("x"), "max_tokens": 50}, False)["max_tokens"] == 50
    body = {**user("x"), "max_tokens": 50, "max_completion_tokens": 70}
    assert to_anthropic("a", "m", body, False)["max_tokens"] == 70


def test_system_and_developer_messages_are_hoisted() -> None:
    one = to_anthropic(
        "a",
        "m",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]
        },
        False,
    )
    assert one["system"] == "Be brief."
    assert [m["role"] for m in one["messages"]] == ["user"]

    body = {
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            },
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "C"},
        ]
    }
    out = to_anthropic("a", "m", body, False)
    assert out["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    # Said later, system text stays in place: a reminder in the user turn (the system prompt,
    # and Anthropic's prompt cache of it, stay as they were).
    assert out["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "text", "text": "<system-reminder>\nC\n</system-reminder>"}]}]


def test_system_cache_control_is_kept() -> None:
    part = {"type": "text", "text": "long prompt", "cache_control": {"type": "ephemeral"}}
    out = to_anthropic(
        "a",
        "m",
        {"messages": [{"role": "system", "content": [part]}, {"role": "user", "content": "q"}]},
        False,
    )
    assert out["system"] == [part]


def test_sampling_stop_and_user() -> None:
    body = {**user("x"), "temperature": 1.7, "top_p": 0.5, "stop": "END", "user": "u-42"}
    out = to_anthropic("a", "m", body, False)
    assert out["temperature"] == 1.0  # clamped to Anthropic's range
    assert "top_p" not in out  # current models reject temperature and top_p together
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-42"}

    out = to_anthropic("a", "m", {**user("x"), "top_p": 0.5, "stop": ["a", "b"]}, False)
    assert out["top_p"] == 0.5 and out["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in to_anthropic("a", "m", {**user("x"), "stop": []}, False)


def test_image_parts() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ],
            }
        ]
    }
    content = to_anthropic("a", "m", body, False)["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_pdf_file_part_becomes_document() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
    }
    content = to_anthropic("a", "m", {"messages": [{"role": "user", "content": [part]}]}, False)[
        "messages"
    ][0]["content"]
    assert content == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        }
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
        {"type": "image_url", "image_url": {"url": "ftp://example.com/x.png"}},
        {"type": "file", "file": {"file_id": "file-123"}},
    ],
)
def test_unsupported_parts_raise(part: dict[str, Any]) -> None:
    unsupported({"messages": [{"role": "user", "content": [part]}]})


def test_n_above_one_is_unsupported() -> None:
    unsupported({**user("x"), "n": 2})


def test_tools_and_tool_choice() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "noop"}},
    ]
    out = to_anthropic("a", "m", {**user("x"), "tools": tools}, False)
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out  # auto is Anthropic's default


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, None),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_mapping(
    choice: Any, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    body: dict[str, Any] = {
        **user("x"),
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": choice,
    }
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_anthropic("a", "m", body, False).get("tool_choice") == expected


def test_non_function_tools_are_unsupported() -> None:
    unsupported({**user("x"), "tools": [{"type": "custom", "custom": {"name": "x"}}]})


def _tool_history() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"role": "user", "content": "Thanks, and which is warmer?"},
        ]
    }


def test_tool_calls_and_results_translate_and_merge() -> None:
    out = to_anthropic("a", "m", _tool_history(), False)
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"type": "text", "text": "Thanks, and which is warmer?"},
            ],
        },
    ]


def test_tool_results_go_before_text_in_a_merged_user_turn() -> None:
    body = _tool_history()
    msgs = body["messages"]
    msgs[2], msgs[3], msgs[4] = msgs[4], msgs[2], msgs[3]  # user text first, then the results
    content = to_anthropic("a", "m", body, False)["messages"][2]["content"]
    assert [b["type"] for b in content] == ["tool_result", "tool_result", "text"]


def test_consecutive_same_role_messages_merge_and_empty_text_is_dropped() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": ""},
            {"role": "user", "content": "b"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
        ]
    }
    out = to_anthropic("a", "m", body, False)["messages"]
    assert out == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        },
    ]


def test_bad_tool_arguments_are_unsupported() -> None:
    body = _tool_history()
    body["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Par'
    unsupported(body)
    body["messages"][1]["tool_calls"][0]["function"]["arguments"] = "[1, 2]"
    unsupported(body)


def test_assistant_prefill_loses_trailing_whitespace() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Count"},
            {"role": "assistant", "content": "1, 2, "},
        ]
    }
    assert to_anthropic("a", "m", body, False)["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "1, 2,"}],
    }


def test_response_format_becomes_a_system_instruction() -> None:
    out = to_anthropic("a", "m", {**user("x"), "response_format": {"type": "json_object"}}, False)
    assert isinstance(out["system"], str) and "JSON object" in out["system"]

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = {
        "messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    system = to_anthropic("a", "m", body, False)["system"]
    assert system[0] == {"type": "text", "text": "Be exact."}
    assert json.dumps(schema, separators=(",", ":")) in system[1]["text"]

    assert "system" not in to_anthropic(
        "a", "m", {**user("x"), "response_format": {"type": "text"}}, False
    )


def test_reasoning_effort_enables_thinking() -> None:
    out = to_anthropic(
        "a", "m", {**user("x"), "reasoning_effort": "medium", "temperature": 0.2}, False
    )
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert out["max_tokens"] > 4096 and "temperature" not in out

    # An explicit limit is kept (it includes thinking, as OpenAI's includes reasoning).
    out = to_anthropic(
        "a", "m", {**user("x"), "reasoning_effort": "high", "max_completion_tokens": 3000}, False
    )
    assert out["max_tokens"] == 3000 and out["thinking"]["budget_tokens"] == 2999
    out = to_anthropic("a", "m", {**user("x"), "reasoning_effort": "low", "max_tokens": 500}, False)
    assert "thinking" not in out  # below Anthropic's minimum budget

    tools = [{"type": "function", "function": {"name": "f"}}]
    forced = {**user("x"), "reasoning_effort": "high", "tools": tools, "tool_choice": "required"}
    assert "thinking" not in to_anthropic("a", "m", forced, False)
    assert "thinking" not in to_anthropic(
        "a", "m", {**_tool_history(), "reasoning_effort": "high"}, False
    )


# ---------------------------------------------------------------- response translation


def test_message_to_completion() -> None:
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool_use",
                "id": "toolu_9",
                "name": "lookup",
                "input": {"q": "x", "n": [1, 2]},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "output_tokens": 7,
        },
    }
    body, usage = from_anthropic_message(data)
    assert body["object"] == "chat.completion" and body["id"] == "msg_1"
    assert body["model"] == "claude-sonnet-4-5-20250929" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["logprobs"] is None
    msg = choice["message"]
    assert msg["content"] == "Let me look." and msg["reasoning_content"] == "Hmm."
    assert msg["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q":"x","n":[1,2]}'},
        }
    ]
    assert (
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
        usage.completion_tokens,
    ) == (130, 100, 20, 7)
    assert body["usage"] == usage.to_openai()


def test_tool_only_answer_has_null_content_and_empty_answer_has_empty_string() -> None:
    data = {
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
        "usage": {},
    }
    assert from_anthropic_message(data)[0]["choices"][0]["message"]["content"] is None
    assert from_anthropic_message({"content": [], "stop_reason": "end_turn"})[0]["choices"][0][
        "message"
    ] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_finish_reasons(stop: str | None, finish: str) -> None:
    assert finish_reason(stop) == finish


def test_usage_reads_thinking_tokens() -> None:
    usage = usage_from_anthropic(
        {"input_tokens": 3, "output_tokens": 9, "output_tokens_details": {"thinking_tokens": 5}}
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (3, 9, 5)


def test_stream_translator_numbers_tool_calls_not_blocks() -> None:
    t = StreamTranslator("anthropic")
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "model": "claude-x",
                "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "tA", "name": "a", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'},
        },
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "tB", "name": "b", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {"type": "some_future_event", "foo": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 30},
        },
        {"type": "message_stop"},
    ]
    chunks = [c for e in events if (c := t.feed(e["type"], e)) is not None]
    assert [c.delta for c in chunks[:-1]] == [
        {"content": "ok"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "tA",
                    "type": "function",
                    "function": {"name": "a", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "tB",
                    "type": "function",
                    "function": {"name": "b", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
    ]
    last = chunks[-1]
    assert t.done and t.model == "claude-x" and last.finish_reason == "tool_calls"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.cached_tokens, last.usage.completion_tokens) == (
        7,
        2,
        30,
    )


def test_stream_translator_error_event_is_midstream_and_redacted() -> None:
    t = StreamTranslator("anthropic", lambda s: s.replace("secret", "[redacted]"))
    with pytest.raises(UpstreamError) as info:
        t.feed(
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded secret"},
            },
        )
    assert info.value.kind == "midstream" and not info.value.retryable
    assert "Overloaded" in info.value.message and "overloaded_error" in info.value.message
    assert "secret" not in info.value.message


# ---------------------------------------------------------------- adapter over HTTP


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(KEY) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def provider(
    fake: FakeAnthropic, session: aiohttp.ClientSession, *, key: str = KEY, **kw: Any
) -> AnthropicProvider:
    timeouts = kw.pop("timeouts", None)
    cfg = ProviderConfig(
        name="anthropic", kind="anthropic", base_url=kw.pop("base_url", fake.url), key=(), **kw
    )
    return AnthropicProvider(cfg, session, key=key, timeouts=timeouts)


async def collect(
    p: AnthropicProvider, body: dict[str, Any], model: str = "claude-haiku-4-5"
) -> list[Chunk]:
    return [c async for c in p.stream(model, body)]


def joined_tool_calls(chunks: list[Chunk]) -> dict[int, dict[str, Any]]:
    """Assemble streamed tool-call deltas the way an OpenAI client does."""
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for d in c.delta.get("tool_calls", []):
            call = calls.setdefault(d["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] = d.get("id", call["id"])
            fn = d.get("function") or {}
            call["name"] = fn.get("name", call["name"])
            call["arguments"] += fn.get("arguments", "")
    return calls


async def test_complete_plain(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    fake.enqueue(
        text_reply(
            "Hello there!", model="claude-haiku-4-5-20251001", input_tokens=9, output_tokens=4
        )
    )
    p = provider(fake, session, headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    result = await p.complete("claude-haiku-4-5", user("hi"))

    assert result.body["object"] == "chat.completion"
    assert result.body["model"] == "claude-haiku-4-5-20251001"  # what Anthropic reports
    assert result.body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there!"}
    assert result.body["choices"][0]["finish_reason"] == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 4)
    assert result.body["usage"]["total_tokens"] == 13

    got = fake.last
    assert got.path == "/v1/messages"
    assert got.headers["x-api-key"] == KEY and "Authorization" not in got.headers
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert got.headers["Content-Type"] == "application/json"
    assert got.body["model"] == "claude-haiku-4-5" and got.body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert "stream" not in got.body


EDITS = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}


async def test_context_management_goes_with_its_beta_header(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """The field is passed as sent, with the beta Anthropic requires for it; a beta the user
    configured keeps its place; a request without the field sends no extra beta."""
    p = provider(fake, session, headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    await p.complete("claude-haiku-4-5", {**user("hi"), "context_management": EDITS})
    assert fake.last.body["context_management"] == EDITS
    assert fake.last.headers["anthropic-beta"] == "prompt-caching-2024-07-31,context-management-2025-06-27"
    assert p.headers["anthropic-beta"] == "prompt-caching-2024-07-31"  # the provider's own headers unchanged

    fake.enqueue(text_reply("streamed"))
    chunks = await collect(provider(fake, session), {**user("hi"), "context_management": EDITS})
    assert "".join(c.delta.get("content", "") for c in chunks) == "streamed"
    assert fake.last.body["stream"] is True and fake.last.body["context_management"] == EDITS
    assert fake.last.headers.getall("anthropic-beta") == ["context-management-2025-06-27"]

    await provider(fake, session).complete("claude-haiku-4-5", user("hi"))
    assert "anthropic-beta" not in fake.last.headers and "context_management" not in fake.last.body


async def test_fake_refuses_context_management_without_the_beta(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """What makes the test above able to fail: the field alone is refused, as Anthropic does."""
    async with session.post(
        fake.url + "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "context_management": EDITS},
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "other-beta"},
    ) as resp:
        assert resp.status == 400
        assert "context_management" in (await resp.json())["error"]["message"]


def test_merged_headers_join_list_headers_once() -> None:
    from omen_local.providers._http import merged_headers

    fixed = {"Content-Type": "application/json", "Anthropic-Beta": "a,b", "x-one": "1"}
    out = merged_headers(fixed, {"anthropic-beta": "b,c", "X-One": "2"})
    assert out == {"Content-Type": "application/json", "Anthropic-Beta": "a,b,c", "X-One": "2"}
    assert fixed["Anthropic-Beta"] == "a,b"


async def test_base_url_with_v1_suffix_and_custom_version(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    p = provider(fake, session, base_url=fake.url + "/v1/", anthropic_version="2024-01-01")
    await p.complete("m", user("hi"))
    assert (
        fake.last.path == "/v1/messages" and fake.last.headers["anthropic-version"] == "2024-01-01"
    )


async def test_stream_text(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    fake.enqueue(text_reply(text, input_tokens=11))
    chunks = await collect(provider(fake, session), user("go"))

    assert fake.last.body["stream"] is True
    assert len(chunks) > 3
    assert "".join(c.delta.get("content", "") for c in chunks) == text
    assert all("role" not in c.delta for c in chunks)
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    final = chunks[-1]
    assert final.finish_reason == "stop" and final.usage is not None
    assert final.usage.prompt_tokens == 11 and final.usage.completion_tokens == len(
        Text(text).pieces()
    )


async def test_stream_thinking(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    fake.enqueue(Reply([Thinking("First, consider the sky."), Text("Blue.")]))
    chunks = await collect(provider(fake, session), {**user("sky?"), "reasoning_effort": "low"})
    assert (
        "".join(c.delta.get("reasoning_content", "") for c in chunks) == "First, consider the sky."
    )
    assert "".join(c.delta.get("content", "") for c in chunks) == "Blue."
    assert fake.last.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}

    fake.enqueue(Reply([Thinking("Hmm."), Text("Blue.")]))
    result = await provider(fake, session).complete("m", user("sky?"))
    message = result.body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Blue.",
        "reasoning_content": "Hmm.",
        "thinking_blocks": [{"type": "thinking", "thinking": "Hmm.", "signature": Thinking("").signature}],
    }


async def test_tool_use_round_trip(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    args = {"city": "Paris", "units": "celsius", "days": [1, 2, 3]}
    fake.enqueue(
        Reply(
            [
                Text("Let me check."),
                ToolUse("get_weather", args, parts=5),
                ToolUse("get_time", {"tz": "CET"}),
            ]
        )
    )
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    p = provider(fake, session)
    first: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Weather and time in Paris?"}],
        "tools": tools,
    }
    chunks = await collect(p, first)

    assert fake.last.body["tools"][0] == {
        "name": "get_weather",
        "input_schema": tools[0]["function"]["parameters"],
    }
    assert chunks[-1].finish_reason == "tool_calls"
    arg_pieces = [
        d["function"]["arguments"]
        for c in chunks
        for d in c.delta.get("tool_calls", [])
        if d["index"] == 0
    ]
    assert len([a for a in arg_pieces if a]) >= 3  # really streamed in pieces
    calls = joined_tool_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == args
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"tz": "CET"}
    assert calls[0]["id"].startswith("toolu_") and calls[0]["id"] != calls[1]["id"]

    # The client runs the tools and sends the history back.
    assistant = {
        "role": "assistant",
        "content": "".join(c.delta.get("content", "") for c in chunks),
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in (calls[0], calls[1])
        ],
    }
    follow_up = {
        "messages": [
            *first["messages"],
            assistant,
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:00"},
        ],
        "tools": tools,
    }
    fake.enqueue(text_reply("18C at 14:00."))
    result = await p.complete(
        "claude-haiku-4-5", follow_up
    )  # the fake rejects unpaired tool_use with 400
    assert result.body["choices"][0]["message"]["content"] == "18C at 14:00."

    sent = fake.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": calls[0]["id"], "name": "get_weather", "input": args},
        {"type": "tool_use", "id": calls[1]["id"], "name": "get_time", "input": {"tz": "CET"}},
    ]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": calls[0]["id"], "content": '{"temp": 18}'},
        {"type": "tool_result", "tool_use_id": calls[1]["id"], "content": "14:00"},
    ]


async def test_complete_tool_use(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    fake.enqueue(tool_reply("lookup", {"q": "omen"}, tool_id="toolu_abc"))
    result = await provider(fake, session).complete(
        "m", {**user("find"), "tools": [{"type": "function", "function": {"name": "lookup"}}]}
    )
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_abc",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q":"omen"}'},
        }
    ]


async def test_system_prompt_and_images_reach_the_wire(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe:"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ]
    }
    await provider(fake, session).complete("m", body)
    got = fake.last.body
    assert got["system"] == "You describe images."
    assert got["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe:"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        }
    ]


async def test_unsupported_request_never_reaches_the_network(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            }
        ]
    }
    with pytest.raises(UpstreamError) as info:
        await provider(fake, session).complete("m", body)
    assert info.value.kind == "unsupported"
    with pytest.raises(UpstreamError):
        await collect(provider(fake, session), body)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
async def test_stop_reasons(
    fake: FakeAnthropic, session: aiohttp.ClientSession, stop_reason: str, finish: str
) -> None:
    p = provider(fake, session)
    fake.enqueue(
        text_reply("x y", stop_reason=stop_reason), text_reply("x y", stop_reason=stop_reason)
    )
    assert (await p.complete("m", user("x"))).body["choices"][0]["finish_reason"] == finish
    assert (await collect(p, user("x")))[-1].finish_reason == finish


async def test_cache_token_usage(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    p = provider(fake, session)
    script = {
        "input_tokens": 6,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 250,
        "output_tokens": 42,
    }
    fake.enqueue(text_reply("cached", **script), text_reply("cached", **script))
    done = await p.complete("m", user("x"))
    streamed = (await collect(p, user("x")))[-1].usage
    for usage in (done.usage, streamed):
        assert usage is not None
        assert usage.prompt_tokens == 1256
        assert usage.cached_tokens == 1000 and usage.cache_write_tokens == 250
        assert usage.completion_tokens == 42
    assert done.body["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1000,
        "cache_write_tokens": 250,
    }


@pytest.mark.parametrize(
    ("status", "retryable", "retry_after", "snippet"),
    [
        (400, False, None, "issue with the format"),
        (401, True, None, "invalid x-api-key"),
        (429, True, 7.0, "rate limit"),
        (500, True, None, "unexpected error"),
        (529, True, None, "Overloaded"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors(
    fake: FakeAnthropic,
    session: aiohttp.ClientSession,
    status: int,
    retryable: bool,
    retry_after: float | None,
    snippet: str,
    streaming: bool,
) -> None:
    fake.enqueue(http_error(status))
    p = provider(fake, session)
    with pytest.raises(UpstreamError) as info:
        if streaming:
            await collect(p, user("x"))
        else:
            await p.complete("m", user("x"))
    err = info.value
    assert (err.kind, err.status, err.retryable, err.retry_after) == (
        "http",
        status,
        retryable,
        retry_after,
    )
    assert snippet in err.message and f"HTTP {status}" in err.message


async def test_wrong_key_is_rejected_and_not_echoed(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(UpstreamError) as info:
        await provider(fake, session, key="sk-ant-wrong-999").complete("m", user("x"))
    assert info.value.status == 401
    assert fake.last.headers["x-api-key"] == "sk-ant-wrong-999"
    assert "sk-ant-wrong-999" not in str(info.value) and "sk-ant-wrong-999" not in repr(info.value)


async def test_key_is_redacted_from_upstream_messages(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    p = provider(fake, session)
    fake.enqueue(
        http_error(400, f"bad key {KEY} in header"),
        Reply([Text("a b c")], error_after=1, error_message=f"Overloaded for {KEY}"),
    )
    errors = []
    for call in (p.complete("m", user("x")), collect(p, user("x"))):
        with pytest.raises(UpstreamError) as info:
            await call
        errors.append(info.value)
    for err in errors:
        assert KEY not in str(err) and KEY not in repr(err) and KEY not in err.message
        assert "[redacted]" in err.message


async def test_midstream_error_event(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    fake.enqueue(Reply([Text("one two three four five")], error_after=2))
    got: list[Chunk] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in provider(fake, session).stream("m", user("x")):
            got.append(chunk)
    assert [c.delta["content"] for c in got] == ["one", " two"]
    assert info.value.kind == "midstream" and not info.value.retryable
    assert "Overloaded" in info.value.message and "overloaded_error" in info.value.message


@pytest.mark.parametrize(
    "script", [{"end_after": 2}, {"close_after": 2}], ids=["no-message-stop", "connection-cut"]
)
async def test_truncated_stream_is_midstream(
    fake: FakeAnthropic, session: aiohttp.ClientSession, script: dict[str, Any]
) -> None:
    fake.enqueue(Reply([Text("one two three four five")], **script))
    got: list[Chunk] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in provider(fake, session).stream("m", user("x")):
            got.append(chunk)
    assert info.value.kind == "midstream"
    assert "".join(c.delta.get("content", "") for c in got) == "one two"
    assert all(c.finish_reason is None for c in got)


async def test_delay_before_first_byte_times_out(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """A stream silent past the idle timeout times out; a whole answer (silent until the
    model is done) is bounded by the total only, so it arrives."""
    p = provider(fake, session, timeouts=Timeouts(connect=1, idle=0.2, total=5))
    fake.enqueue(text_reply("late", delay=1.0), text_reply("late", delay=1.0))
    done = await p.complete("m", user("x"))
    assert done.body["choices"][0]["message"]["content"] == "late"
    with pytest.raises(UpstreamError) as info:
        await collect(p, user("x"))
    assert info.value.kind == "timeout"


async def test_stall_between_deltas_is_midstream(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    p = provider(fake, session, timeouts=Timeouts(connect=1, idle=0.2, total=5))
    fake.enqueue(Reply([Text("a b")], delta_delay=1.0))
    with pytest.raises(UpstreamError) as info:
        await collect(p, user("x"))
    assert info.value.kind == "midstream"


async def test_small_delay_is_tolerated(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(text_reply("fine", delay=0.05, delta_delay=0.01))
    chunks = await collect(provider(fake, session), user("x"))
    assert chunks[-1].finish_reason == "stop"


async def test_closing_the_stream_closes_the_upstream(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(text_reply([f"w{i} " for i in range(200)], delta_delay=0.02))
    stream = provider(fake, session).stream("m", user("x"))
    first = await anext(stream)
    assert first.delta == {"content": "w0 "}
    await stream.aclose()  # type: ignore[attr-defined]
    seen = fake.last
    await fake.wait_closed(seen)
    assert not seen.finished


async def test_unreachable_upstream_is_connect_error(session: aiohttp.ClientSession) -> None:
    async with FakeAnthropic(KEY) as gone:
        url = gone.url
    cfg = ProviderConfig(name="anthropic", kind="anthropic", base_url=url, key=())
    with pytest.raises(UpstreamError) as info:
        await AnthropicProvider(cfg, session, key=KEY).complete("m", user("x"))
    assert info.value.kind == "connect" and KEY not in info.value.message


# ---------------------------------------------------------------- the fake itself


async def test_fake_validates_like_the_api(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    url = fake.url + "/v1/messages"
    good = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    cases = [
        (good, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, 400, "max_tokens"),
        (
            {"x-api-key": KEY},
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            400,
            "anthropic-version",
        ),
        (
            {"anthropic-version": "2023-06-01"},
            {"model": "m", "max_tokens": 5, "messages": []},
            401,
            "x-api-key",
        ),
        (
            good,
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            400,
            "system",
        ),
    ]
    for headers, body, status, snippet in cases:
        async with session.post(url, json=body, headers=headers) as resp:
            data = await resp.json()
        assert resp.status == status
        assert data["type"] == "error" and snippet in data["error"]["message"]
        assert data["request_id"].startswith("req_")
    assert len(fake.requests) == len(cases)


async def test_fake_sse_framing(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    fake.enqueue(text_reply("Hi you"))
    body = {
        "model": "m",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with session.post(
        fake.url + "/v1/messages",
        json=body,
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    ) as resp:
        raw = (await resp.read()).decode()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
    frames = raw.split("\n\n")
    assert frames[-1] == ""
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames[:-1]]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for f in frames[:-1]:
        event, data = f.split("\n")
        assert data.startswith("data: ") and json.loads(data[6:])["type"] == event[7:]


# ---------------------------------------------------------------- the official SDK reads the fake


def sdk(fake: FakeAnthropic) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.url, api_key=KEY, max_retries=0)


async def test_official_sdk_streams_from_the_fake() -> None:
    async with FakeAnthropic(KEY, accept_bearer=True) as fake:
        fake.enqueue(
            Reply(
                [
                    Thinking("Think."),
                    Text("Calling a tool."),
                    ToolUse("get_weather", {"city": "Paris", "n": [1, 2]}, parts=4),
                ],
                input_tokens=20,
                cache_read_input_tokens=30,
                cache_creation_input_tokens=40,
                output_tokens=50,
            )
        )
        client = sdk(fake)
        async with client.messages.stream(
            model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            types = [event.type async for event in stream]
            message = await stream.get_final_message()
        await client.close()
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Think." and thinking.signature
    assert text.type == "text" and text.text == "Calling a tool."
    assert (
        tool.type == "tool_use"
        and tool.name == "get_weather"
        and tool.input == {"city": "Paris", "n": [1, 2]}
    )
    assert message.stop_reason == "tool_use" and message.model == "claude-x"
    u = message.usage
    assert (
        u.input_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        u.output_tokens,
    ) == (20, 30, 40, 50)


async def test_official_sdk_reads_messages_and_errors_from_the_fake() -> None:
    async with FakeAnthropic(KEY, accept_bearer=True) as fake:
        client = sdk(fake)
        fake.enqueue(
            text_reply("Plain."),
            http_error(429),
            http_error(529),
            Reply([Text("a b c")], error_after=1),
        )
        message = await client.messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == "Plain."

        with pytest.raises(anthropic.RateLimitError) as rate:
            await client.messages.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        assert rate.value.response.headers["retry-after"] == "7"
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await client.messages.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        assert overloaded.value.status_code == 529

        with pytest.raises(anthropic.APIStatusError) as mid:
            async with client.messages.stream(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                async for _ in stream:
                    pass
        assert "overloaded_error" in str(mid.value)
        await client.close()
