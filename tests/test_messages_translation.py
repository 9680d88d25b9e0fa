"""The /v1/messages door's pure parts: Messages body -> chat body, chunks -> Anthropic events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from omen_local.api.messages import parse_count_tokens_request, parse_messages_request
from omen_local.errors import OmenError
from omen_local.providers.base import Chunk, Completion, Usage
from omen_local.server.messages_encode import MessagesEncoder, message_from_completion
from omen_local.wire.anthropic import (
    effort_for_budget,
    stop_reason,
    usage_from_anthropic,
    usage_to_anthropic,
)
from tests.door_util import sse_events

PDF = "JVBERi0xLjQK"


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **kw}


def test_history_with_tools_documents_and_thinking_becomes_chat() -> None:
    req = parse_messages_request(
        body(
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Be kind."}],
            messages=[
                {"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "a.pdf"}, {"type": "text", "text": "Summarise"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"page": 2}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "also this"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "no such page"}], "is_error": True},
                    ],
                },
            ],
        )
    )
    m = req.chat["messages"]
    assert m[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Be kind."}],
    }
    assert m[1]["content"][0] == {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}}
    assert m[2] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": '{"page":2}'}}],
        # Signed thinking rides along as sent (only the Anthropic adapter uses it).
        "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}],
    }
    # Tool results come first after the assistant turn, as chat requires.
    assert m[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "(error) no such page"}
    assert m[4] == {"role": "user", "content": "also this"}
    assert req.chat["max_completion_tokens"] == 100 and req.chat["stream"] is False and not req.thinking


def test_sampling_tools_thinking_and_output_config() -> None:
    req = parse_messages_request(
        body(
            temperature=0.2,
            top_p=0.9,
            top_k=0,
            stop_sequences=["END", "STOP"],
            metadata={"user_id": "u1"},
            tools=[{"name": "f", "input_schema": {"type": "object"}, "description": "does f", "cache_control": {"type": "ephemeral"}}],
            tool_choice={"type": "none"},
            thinking={"type": "adaptive"},
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}},
            stream=True,
            omen={"intent": "code"},
            service_tier="auto",
        )
    )
    chat = req.chat
    assert (chat["temperature"], chat["top_p"], chat["stop"], chat["user"]) == (0.2, 0.9, ["END", "STOP"], "u1")
    assert "top_k" not in chat  # 0 means "not set"
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "description": "does f"}}]
    assert chat["tool_choice"] == "none" and "parallel_tool_calls" not in chat
    assert chat["reasoning_effort"] == "medium" and req.thinking  # adaptive thinking wins over output_config.effort
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}
    assert chat["omen"] == {"intent": "code"} and req.stream and chat["stream"] is True
    assert "service_tier" not in chat


@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (4095, "low"), (4096, "medium"), (20000, "high")])
def test_thinking_budget_to_effort(budget: int, effort: str) -> None:
    assert effort_for_budget(budget) == effort
    req = parse_messages_request(body(max_tokens=30000, thinking={"type": "enabled", "budget_tokens": budget}))
    assert req.chat["reasoning_effort"] == effort and req.thinking


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"model": ""}, "model"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, "messages[0].content[0].source"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "y", "input": {}}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "y", "input": []}]}]}, "messages[0].content[0].input"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}, "messages[0].content[0].tool_use_id"),
        ({"tools": [{"name": "bad name", "input_schema": {}}]}, "tools[0].name"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "g"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id"),
        ({"thinking": {"type": "lots"}}, "thinking.type"),
        ({"output_config": {"effort": "huge"}}, "output_config.effort"),
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format"),
        ({"stream": "yes"}, "stream"),
        ({"container": "c"}, "container"),
        ({"system": [{"type": "image"}]}, "system[0].type"),
    ],
)
def test_bad_fields_are_400_naming_them(patch: dict[str, Any], param: str) -> None:
    with pytest.raises(OmenError) as err:
        parse_messages_request(body(**patch))
    assert err.value.status == 400 and err.value.param == param and param in err.value.message


def test_count_tokens_takes_no_generation_fields() -> None:
    model, chat = parse_count_tokens_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "system": "s"})
    assert model == "m" and chat["messages"][0] == {"role": "system", "content": "s"}
    with pytest.raises(OmenError) as err:
        parse_count_tokens_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5})
    assert err.value.param == "max_tokens"


def test_usage_and_stop_reasons_round_trip() -> None:
    raw = {"input_tokens": 5, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3, "output_tokens": 9}
    assert usage_to_anthropic(usage_from_anthropic(raw)) == raw
    assert [stop_reason(f) for f in ("stop", "length", "tool_calls", "content_filter", None, "weird")] == [
        "end_turn",
        "max_tokens",
        "tool_use",
        "refusal",
        "end_turn",
        "end_turn",
    ]


def test_encoder_blocks_tool_calls_swaps_and_order() -> None:
    enc = MessagesEncoder("msg_1", "m", thinking=True, input_estimate=12)
    frames = enc.start()
    frames += enc.chunk(Chunk(delta={"reasoning_content": "think"}))
    frames += enc.chunk(Chunk(delta={"content": "Hi"}))
    frames += enc.chunk(Chunk(delta={"content": " there"}))
    frames += enc.chunk(Chunk(delta={"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": ""}}]}))
    frames += enc.chunk(Chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}))
    frames += enc.chunk(Chunk(delta={"tool_calls": [{"index": 1, "id": "c1", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}))
    frames += enc.chunk(Chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))  # late piece of call 0
    frames += enc.chunk(Chunk(finish_reason="tool_calls"))
    frames += enc.finish(Usage(prompt_tokens=20, completion_tokens=4, cached_tokens=5))
    events = sse_events(frames)
    names = [e for e, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",  # 0 thinking
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 1 text
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 2 tool f
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 3 tool g
        "content_block_delta",
        "content_block_delta",  # call 0's late piece goes to block 2
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [d for _, d in events]
    assert data[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert data[9]["content_block"] == {"type": "tool_use", "id": "c0", "name": "f", "input": {}}
    assert data[14]["index"] == 2 and data[14]["delta"] == {"type": "input_json_delta", "partial_json": "1}"}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"
    assert data[-2]["usage"] == {"input_tokens": 15, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5, "output_tokens": 4}

    plain = MessagesEncoder("msg_2", "m", thinking=False, input_estimate=1)
    out = plain.chunk(Chunk(delta={"reasoning_content": "hidden", "content": "a"}))
    out += plain.chunk(Chunk(omen={"swap": {"from": "x", "to": "y", "discard_chars": 1}}))
    out += plain.chunk(Chunk(delta={"content": "b"}))
    names = [e for e, _ in sse_events(out)]
    assert names == ["content_block_start", "content_block_delta", "content_block_stop", "content_block_start", "content_block_delta"]
    assert b"hidden" not in out


def test_message_from_completion() -> None:
    done = Completion(
        body={
            "model": "m",
            "choices": [
                {
                    "message": {
                        "content": "ok",
                        "reasoning_content": "r",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "not json"}}, {"function": {"name": "g", "arguments": '{"x": 1}'}}],
                    },
                    "finish_reason": "length",
                }
            ],
        },
        usage=Usage(prompt_tokens=3, completion_tokens=2),
    )
    msg = message_from_completion(done, "msg_x", "m", thinking=False)
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use", "tool_use"]
    assert msg["content"][1]["input"] == {} and msg["content"][2]["input"] == {"x": 1}
    assert msg["content"][2]["id"].startswith("toolu_") and msg["stop_reason"] == "max_tokens"
    assert json.loads(json.dumps(msg))["usage"]["output_tokens"] == 2
    assert message_from_completion(done, "msg_x", "m", thinking=True)["content"][0] == {"type": "thinking", "thinking": "r", "signature": ""}
