"""Validation of ``POST /v1/chat/completions`` bodies.

Only what we must understand is checked strictly (messages, tools, limits, streaming);
other OpenAI fields pass through to OpenAI-compatible upstreams untouched, so new
client features keep working. Every rejection is a 400 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import invalid
from .hints import Hints, parse_hints
from .shape import check_output_cap, check_sampling, checked_body, stream_flags

ROLES = ("system", "developer", "user", "assistant", "tool")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")


class Operation(StrEnum):
    """What a request asks an upstream for: the door it came in by decides."""

    CHAT = "chat"  # chat completions (also /v1/messages and /v1/responses, translated)
    TEXT = "text"  # legacy completions, fill-in-the-middle included
    EMBED = "embed"  # embeddings


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class ChatRequest:
    """A request as routing sees it, whatever door it came in by (``op`` says which kind)."""

    model: str
    body: dict[str, Any]  # the OpenAI body without "model" and "omen"
    stream: bool
    include_usage: bool
    hints: Hints
    alias: str | None = None  # the model alias the client asked for (its hints are in ``hints``)
    asked: str | None = None  # the model name the client sent, when [aliases] mapped it (api/model_map.py)
    op: Operation = Operation.CHAT




def _check_content(content: Any, where: str, role: str) -> None:
    if content is None:
        if role in ("assistant",):
            return
        raise invalid(f"{where}.content is required for role {role!r}", f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    for j, part in enumerate(content):
        pw = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise invalid(f"{pw} must be an object", pw)
        kind = part.get("type")
        if kind not in PART_TYPES:
            raise invalid(f"{pw}.type must be one of {', '.join(PART_TYPES)}", f"{pw}.type")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise invalid(f"{pw}.text must be a string", f"{pw}.text")
        if kind == "image_url":
            img = part.get("image_url")
            if not isinstance(img, dict) or not isinstance(img.get("url"), str):
                raise invalid(f"{pw}.image_url.url must be a string", f"{pw}.image_url")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    for j, call in enumerate(calls):
        cw = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str):
            raise invalid(f"{cw}.id must be a string", f"{cw}.id")
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise invalid(f"{cw}.function.name must be a string", f"{cw}.function")
        if not isinstance(fn.get("arguments", ""), str):
            raise invalid(f"{cw}.function.arguments must be a JSON string", f"{cw}.function.arguments")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(f"{where} must be an object", where)
        role = m.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
        if m.get("tool_calls") is not None and role != "assistant":
            raise invalid(f"{where}.tool_calls is only allowed in assistant messages", f"{where}.tool_calls")
        if role == "assistant" and m.get("tool_calls") is not None:
            _check_tool_calls(m["tool_calls"], where)
        _check_content(m.get("content"), where, role)
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise invalid(f"{where}.tool_call_id must be a string", f"{where}.tool_call_id")


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools must be a list", "tools")
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise invalid(f"{where}.type must be 'function'", f"{where}.type")
            fn = tool.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise invalid(f"{where}.function.name must be a non-empty string", f"{where}.function.name")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise invalid(f"{where}.function.parameters must be a JSON Schema object", f"{where}.function.parameters")
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise invalid("tool_choice must be 'none', 'auto', 'required' or a function object", "tool_choice")
        elif not (
            isinstance(choice, dict)
            and choice.get("type") == "function"
            and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str)
        ):
            raise invalid("tool_choice must be 'none', 'auto', 'required' or a function object", "tool_choice")


def _check_scalars(body: dict[str, Any]) -> None:
    check_sampling(body)
    check_output_cap(body, "max_tokens", "max_completion_tokens")
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid("n must be 1: OMEN returns one choice per request", "n")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise invalid("stop must be a string or a list of strings", "stop")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in RESPONSE_FORMATS):
        raise invalid(f"response_format.type must be one of {', '.join(RESPONSE_FORMATS)}", "response_format")
    if fmt is not None and fmt.get("type") == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
        raise invalid("response_format.json_schema must be an object", "response_format.json_schema")


def parse_chat_request(raw: Any, *, intents: tuple[str, ...], providers: tuple[str, ...]) -> ChatRequest:
    """Validate a decoded JSON body; raise a 400 :class:`OmenError` naming the first bad field."""
    raw, model = checked_body(raw)
    _check_messages(raw.get("messages"))
    stream, include_usage = stream_flags(raw)
    _check_tools(raw)
    _check_scalars(raw)
    hints = parse_hints(raw.get("omen"), intents=intents, providers=providers)
    body = {k: v for k, v in raw.items() if k not in ("model", "omen", "stream")}
    return ChatRequest(
        model=model,
        body=body,
        stream=stream,
        include_usage=include_usage,
        hints=hints,
    )
