"""/v1/responses takes what Codex CLI sends (captured from codex 0.171.0) and answers as Codex expects.

Fields that tune OpenAI's own service are accepted and never reach an upstream; ``namespace``
tools (Codex's MCP servers) go upstream flattened and their calls come back with
``namespace`` + ``name`` as the client sent them; hosted tools are left out and the answer
says so; custom tools go as one-string functions and come back as ``custom_tool_call``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests import door_util as du
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply, tool_reply

MODELS = {
    "ollama": "ollama/llama3.2:latest",
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
}
READ_FILE = {
    "type": "function",
    "name": "rune__read_file",
    "description": "Read a file",
    "strict": False,
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}
GLYPH = {"type": "namespace", "name": "mcp__glyph", "description": "Glyph's tools", "tools": [READ_FILE]}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
SERVICE_ONLY = {
    "client_metadata": {"session_id": "s-1", "x-codex-installation-id": "i-1"},
    "prompt_cache_key": "s-1",
    "service_tier": "flex",
    "include": ["reasoning.encrypted_content"],
    "store": False,
}


def codex_body(**over: Any) -> dict[str, Any]:
    """The shape of codex exec's first request (fields as captured; prompts shortened)."""
    body: dict[str, Any] = {
        "model": "auto",
        "stream": True,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto", "effort": "low", "context": "all_turns"},
        "text": {"verbosity": "low"},
        "tools": [EXEC, GLYPH, {"type": "web_search", "external_web_access": False}],
        "input": [
            {"type": "message", "id": "msg_1", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "id": "msg_2", "role": "user", "content": [{"type": "input_text", "text": "read note.txt"}]},
        ],
        **SERVICE_ONLY,
    }
    body.update(over)
    return body


def queue_call(stack: Stack, provider: str, name: str, args: dict[str, Any]) -> None:
    if provider == "anthropic":
        stack.anthropic.enqueue(tool_reply(name, args, parts=3))
    else:
        fake = stack.ollama if provider == "ollama" else stack.openai
        fake.queue(Reply(text="", tool_calls=[(name, json.dumps(args))], finish_reason="tool_calls"))


def queue_text(stack: Stack, provider: str, text: str) -> None:
    if provider == "anthropic":
        stack.anthropic.enqueue(text_reply(text))
    else:
        (stack.ollama if provider == "ollama" else stack.openai).queue(Reply(text=text))


def upstream_body(stack: Stack, provider: str) -> dict[str, Any]:
    if provider == "anthropic":
        return stack.anthropic.last.body  # type: ignore[no-any-return]
    return (stack.ollama if provider == "ollama" else stack.openai).seen[-1].body  # type: ignore[no-any-return]


def tool_names(provider: str, body: dict[str, Any]) -> list[str]:
    if provider == "anthropic":
        return [t["name"] for t in body.get("tools", [])]
    return [t["function"]["name"] for t in body.get("tools", [])]


@pytest.mark.parametrize("provider", list(MODELS))
async def test_codex_turn_namespaced_call_and_its_round_trip(stack: Stack, provider: str) -> None:
    queue_call(stack, provider, "mcp__glyph__rune__read_file", {"path": "note.txt"})
    status, headers, raw = await du.post(stack, "/v1/responses", codex_body(model=MODELS[provider]))
    assert status == 200, raw
    assert headers["x-omen-omitted-tools"] == "web_search"
    ignored = headers["x-omen-ignored-fields"].split(", ")
    assert {"client_metadata", "prompt_cache_key", "service_tier", "include:reasoning.encrypted_content", "text.verbosity"} <= set(ignored)
    sent = upstream_body(stack, provider)
    assert tool_names(provider, sent) == ["exec_command", "mcp__glyph__rune__read_file"]  # web_search left out
    text = json.dumps(sent)
    for field in ("client_metadata", "prompt_cache_key", "service_tier", "verbosity", "encrypted_content", "web_search", "namespace"):
        assert field not in text, (field, provider)
    events = du.sse_events(raw)
    done = [d["item"] for name, d in events if name == "response.output_item.done"]
    assert [(i["type"], i.get("namespace"), i["name"]) for i in done] == [("function_call", "mcp__glyph", "rune__read_file")]
    assert json.loads(done[0]["arguments"]) == {"path": "note.txt"}
    added = [d["item"] for name, d in events if name == "response.output_item.added"]
    assert added[0]["namespace"] == "mcp__glyph" and added[0]["name"] == "rune__read_file"
    final = events[-1][1]["response"]
    assert events[-1][0] == "response.completed" and final["output"][0]["namespace"] == "mcp__glyph"

    # the second turn, as Codex sends it: the call echoed with namespace, id and status, then its output
    call = done[0]
    queue_text(stack, provider, "It says hello.")
    history = [
        *codex_body()["input"],
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None},
        {"type": "function_call", "status": "completed", "id": call["id"], "name": "rune__read_file", "namespace": "mcp__glyph",
         "arguments": call["arguments"], "call_id": call["call_id"]},
        {"type": "function_call_output", "id": "fco_1", "call_id": call["call_id"], "output": "hello glyph"},
    ]
    status, _, raw = await du.post(stack, "/v1/responses", codex_body(model=MODELS[provider], input=history))
    assert status == 200, raw
    assert du.sse_events(raw)[-1][1]["response"]["output"][0]["content"][0]["text"] == "It says hello."
    sent = upstream_body(stack, provider)
    if provider == "anthropic":
        uses = [b for m in sent["messages"] for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]
        results = [b for m in sent["messages"] for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
        assert [u["name"] for u in uses] == ["mcp__glyph__rune__read_file"] and results[0]["tool_use_id"] == uses[0]["id"]
    else:
        calls = [c for m in sent["messages"] for c in m.get("tool_calls") or []]
        assert [c["function"]["name"] for c in calls] == ["mcp__glyph__rune__read_file"]
        assert sent["messages"][-1]["role"] == "tool" and "hello glyph" in json.dumps(sent["messages"][-1])


async def test_non_streamed_answer_names_the_namespace_too(stack: Stack) -> None:
    queue_call(stack, "openai", "mcp__glyph__rune__read_file", {"path": "a"})
    status, headers, raw = await du.post(stack, "/v1/responses", codex_body(model=MODELS["openai"], stream=False))
    body = json.loads(raw)
    assert status == 200 and headers["x-omen-omitted-tools"] == "web_search"
    [call] = body["output"]
    assert (call["type"], call["namespace"], call["name"]) == ("function_call", "mcp__glyph", "rune__read_file")
    assert body["service_tier"] == "default" and body["store"] is False  # the tier that served it, not the one asked


async def test_custom_tool_goes_as_a_function_and_comes_back_as_custom_tool_call(stack: Stack) -> None:
    """Codex's default model declares its tools in the input (additional_tools) with a custom ``exec``."""
    exec_tool = {"type": "custom", "name": "exec", "description": "Run JavaScript",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    wait = {"type": "function", "name": "wait", "description": "Wait", "strict": False, "parameters": {"type": "object", "properties": {}}}
    declared = {"type": "additional_tools", "id": "at_1", "role": "developer",
                "tools": [{"type": "namespace", "name": "functions", "description": "", "tools": [exec_tool, wait]}]}
    body = codex_body(model=MODELS["openai"], tools=None)
    body.pop("tools")
    body["input"] = [declared, *body["input"]]
    queue_call(stack, "openai", "functions__exec", {"input": "console.log(1)"})
    status, _, raw = await du.post(stack, "/v1/responses", body)
    assert status == 200, raw
    sent = upstream_body(stack, "openai")
    assert tool_names("openai", sent) == ["functions__exec", "functions__wait"]
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["input"]
    events = du.sse_events(raw)
    [item] = [d["item"] for name, d in events if name == "response.output_item.done"]
    assert item["type"] == "custom_tool_call" and item["namespace"] == "functions" and item["name"] == "exec"
    assert item["input"] == "console.log(1)"
    # its echo in the next turn goes upstream as the same call
    queue_text(stack, "openai", "1")
    body["input"] = [*body["input"], {"type": "custom_tool_call", "call_id": item["call_id"], "namespace": "functions", "name": "exec",
                                      "input": "console.log(1)"},
                     {"type": "custom_tool_call_output", "call_id": item["call_id"], "output": "1"}]
    status, _, raw = await du.post(stack, "/v1/responses", body)
    assert status == 200, raw
    [call] = [c for m in upstream_body(stack, "openai")["messages"] for c in m.get("tool_calls") or []]
    assert call["function"] == {"name": "functions__exec", "arguments": json.dumps({"input": "console.log(1)"})}


async def test_only_hosted_tools_means_no_tools_upstream(stack: Stack) -> None:
    body = codex_body(model=MODELS["openai"], stream=False, tools=[{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]}],
                      tool_choice={"type": "web_search"})
    status, headers, raw = await du.post(stack, "/v1/responses", body)
    assert status == 200, raw
    assert headers["x-omen-omitted-tools"] == "web_search, file_search"
    assert "tool_choice" in headers["x-omen-ignored-fields"]
    sent = upstream_body(stack, "openai")
    assert "tools" not in sent and "tool_choice" not in sent and "parallel_tool_calls" not in sent


async def test_openai_wording_for_what_stays_a_400(stack: Stack) -> None:
    status, _, raw = await du.post(stack, "/v1/responses", {"model": "auto", "input": "hi", "frobnicate": 1})
    assert status == 400 and json.loads(raw)["error"] == {
        "message": "Unknown parameter: 'frobnicate'.", "type": "invalid_request_error", "code": "unknown_parameter", "param": "frobnicate"}
    status, _, raw = await du.post(stack, "/v1/responses", {"model": "auto"})
    assert json.loads(raw)["error"]["message"] == "Missing required parameter: 'input'."
    status, _, raw = await du.post(stack, "/v1/responses", {"model": "auto", "input": "hi", "temperature": "hot"})
    err = json.loads(raw)["error"]
    assert err["code"] == "invalid_type" and err["message"] == "Invalid type for 'temperature': expected a decimal, but got a string instead."
    status, _, raw = await du.post(stack, "/v1/responses", {"model": "auto", "input": "hi", "reasoning": {"effort": "extreme"}})
    assert json.loads(raw)["error"]["message"].startswith("Invalid value: 'extreme'. Supported values are: 'none'")


async def test_previous_response_id_carries_a_namespaced_call(stack: Stack) -> None:
    queue_call(stack, "openai", "mcp__glyph__rune__read_file", {"path": "a"})
    body = codex_body(model=MODELS["openai"], stream=False, store=True)
    status, _, raw = await du.post(stack, "/v1/responses", body)
    first = json.loads(raw)
    call = first["output"][0]
    queue_text(stack, "openai", "done")
    follow = {"model": MODELS["openai"], "previous_response_id": first["id"], "tools": [GLYPH],
              "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "content of a"}]}
    status, _, raw = await du.post(stack, "/v1/responses", follow)
    assert status == 200, raw
    messages = upstream_body(stack, "openai")["messages"]
    calls = [c for m in messages for c in m.get("tool_calls") or []]
    assert [c["function"]["name"] for c in calls] == ["mcp__glyph__rune__read_file"] and calls[0]["id"] == call["call_id"]
    assert messages[-1] == {"role": "tool", "tool_call_id": call["call_id"], "content": "content of a"}


async def test_allowed_tools_choice_keeps_only_the_listed_tools(stack: Stack) -> None:
    queue_text(stack, "openai", "ok")
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "rune__read_file", "namespace": "mcp__glyph"}]}
    status, _, raw = await du.post(stack, "/v1/responses", codex_body(model=MODELS["openai"], stream=False, tool_choice=choice))
    assert status == 200, raw
    sent = upstream_body(stack, "openai")
    assert tool_names("openai", sent) == ["mcp__glyph__rune__read_file"] and sent["tool_choice"] == "required"


# ---------------------------------------------------------------- /v1/responses/compact (Codex's compaction)


def compact_body(**over: Any) -> dict[str, Any]:
    """The shape of codex-rs's CompactionInput (codex-api/src/common.rs): a long session's history
    with a namespaced call and its output, the tools it had, no stream."""
    body: dict[str, Any] = {
        "model": "auto",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd=/w</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "read note.txt and fix it"}]},
            {"type": "function_call", "call_id": "call_1", "namespace": "mcp__glyph", "name": "rune__read_file", "arguments": '{"path": "note.txt"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "hello wrld"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Fixed the typo."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "now add a test"}]},
        ],
        "tools": [EXEC, GLYPH, {"type": "web_search", "external_web_access": False}],
        "parallel_tool_calls": True,
        "reasoning": {"effort": "low", "summary": "auto"},
        "service_tier": "flex",
        "prompt_cache_key": "s-1",
        "text": {"verbosity": "low"},
    }
    body.update(over)
    return body


@pytest.mark.parametrize("provider", list(MODELS))
async def test_compact_summarises_through_each_upstream(stack: Stack, provider: str) -> None:
    queue_text(stack, provider, "Goal: fix note.txt. Done: typo fixed. Next: add a test.")
    status, headers, raw = await du.post(stack, "/v1/responses/compact", compact_body(model=MODELS[provider]))
    assert status == 200, raw
    body = json.loads(raw)
    assert headers["x-omen-provider"] == provider and body["object"] == "response.compaction"
    texts = [(i["type"], i["role"], i["content"][0]["text"]) for i in body["output"]]
    # The user's own words, in order (not Codex's context message), then the summary: what Codex keeps locally.
    assert [t[2] for t in texts[:2]] == ["read note.txt and fix it", "now add a test"]
    assert all(t[:2] == ("message", "user") for t in texts)
    assert texts[-1][2].endswith("Goal: fix note.txt. Done: typo fixed. Next: add a test.") and len(texts) == 3
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    sent = upstream_body(stack, provider)
    blob = json.dumps(sent)
    assert "CONTEXT CHECKPOINT COMPACTION" in blob and "hello wrld" in blob  # the whole history was summarised
    assert sent.get("stream") in (None, False)
    if provider == "openai":
        assert sent["tool_choice"] == "none"  # tools declared (the history has calls), none to be called
    if provider == "anthropic":
        assert sent["tool_choice"] == {"type": "none"}
    assert headers["x-omen-omitted-tools"] == "web_search"


async def test_compact_errors_keep_the_openai_shape(stack: Stack) -> None:
    status, _, raw = await du.post(stack, "/v1/responses/compact", {"model": "auto"})
    assert status == 400 and json.loads(raw)["error"]["param"] == "input", raw
    stack.openai.queue(Reply(text=""))
    status, _, raw = await du.post(stack, "/v1/responses/compact", compact_body(model=MODELS["openai"]))
    error = json.loads(raw)["error"]
    assert status == 502 and error["code"] == "empty_summary" and "history was left as it was" in error["message"], raw
    # The door keeps serving.
    stack.openai.queue(Reply(text="summary"))
    status, _, raw = await du.post(stack, "/v1/responses/compact", compact_body(model=MODELS["openai"], input="just this"))
    assert status == 200 and next(i["content"][0]["text"] for i in json.loads(raw)["output"]) == "just this", raw


@pytest.mark.parametrize("stream", [True, False])
async def test_compaction_trigger_answers_a_compaction_item_that_comes_back_as_text(stack: Stack, stream: bool) -> None:
    """Codex 0.171's remote compaction: the input ends in ``compaction_trigger``; the answer is one
    ``compaction`` item (streamed as output_item events), and sent back later it reaches the
    upstream as the summary's text."""
    queue_text(stack, "openai", "Goal: fix note.txt.")
    trigger = compact_body(model=MODELS["openai"], stream=stream, store=False)
    trigger["input"] = [*trigger["input"], {"type": "compaction_trigger"}]
    status, _, raw = await du.post(stack, "/v1/responses", trigger)
    assert status == 200, raw
    if stream:
        events = du.sse_events(raw)
        done = [d for _, d in events if isinstance(d, dict) and d.get("type") == "response.output_item.done"]
        assert [d["item"]["type"] for d in done] == ["compaction"]
        assert not any(isinstance(d, dict) and d.get("type") == "response.output_text.delta" for _, d in events)
        item = done[0]["item"]
    else:
        [item] = json.loads(raw)["output"]
    assert item["type"] == "compaction" and "Goal: fix note.txt." in item["encrypted_content"]
    sent = upstream_body(stack, "openai")
    assert sent["tool_choice"] == "none" and "CONTEXT CHECKPOINT COMPACTION" in json.dumps(sent["messages"][-1])

    queue_text(stack, "openai", "carrying on")
    later = codex_body(model=MODELS["openai"], input=[item, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]}])
    status, _, raw = await du.post(stack, "/v1/responses", later)
    assert status == 200, raw
    users = [m["content"] for m in upstream_body(stack, "openai")["messages"] if m["role"] == "user"]
    assert any(isinstance(c, str) and c.endswith("Goal: fix note.txt.") and "omen-summary" not in c for c in users), users
    # OpenAI's own encrypted checkpoint cannot be read by any upstream: left out, not a 400.
    queue_text(stack, "openai", "ok")
    foreign = codex_body(model=MODELS["openai"], input=[{"type": "compaction", "encrypted_content": "gAAAA-opaque"}, later["input"][1]])
    status, _, raw = await du.post(stack, "/v1/responses", foreign)
    assert status == 200 and "gAAAA" not in json.dumps(upstream_body(stack, "openai")), raw
