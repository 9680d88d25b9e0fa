"""``POST /v1/messages`` (Anthropic Messages API): validation and translation to a chat body.

The door routes like chat, so a Messages body becomes an OpenAI chat body here and goes
through the same parser, router and providers (an Anthropic upstream translates it back
with the same tables, ``wire/anthropic.py``). Every rejection is a 400 naming the field
in the message; the door renders it in Anthropic's error shape.

What each field becomes per upstream kind is the table in docs/api.md ("Messages door:
fields"). Anthropic-only parts of the history ride on the chat body as extensions the
Anthropic adapter honours and the OpenAI-compatible adapter strips
(``wire.anthropic.without_anthropic_extensions``): thinking blocks with their signatures
(``thinking_blocks`` on an assistant message) and ``cache_control`` on content parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import jsonutil
from ..errors import OmenError, invalid
from ..wire.anthropic import (
    Unmappable,
    effort_for_budget,
    file_part,
    image_part,
    tool_choice_from_anthropic,
    tools_from_anthropic,
)
from .shape import is_int, is_num

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_CHOICES = ("auto", "any", "tool", "none")
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}

# Top-level fields understood; those accepted without effect are Anthropic-side service
# settings (tier, region, speed, automatic cache marker) that no routed upstream needs.
FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
        "omen",
        "service_tier",
        "inference_geo",
        "speed",
        "cache_control",
        "context_management",
    }
)
# Carried (docs/api.md, "Messages door: fields"): context_management goes to Anthropic
# upstreams as sent, with the beta header it needs; other upstreams get no thinking to clear.
# Ignored: Anthropic-side service settings no routed upstream needs.
TRANSLATED = ("system", "thinking", "output_config", "tool_choice", "stop_sequences", "metadata", "top_k", "context_management")
IGNORED = ("service_tier", "inference_geo", "speed", "cache_control")
COUNT_FIELDS = FIELDS - {"max_tokens", "stop_sequences", "stream", "temperature", "top_p", "top_k", "metadata", "service_tier", "inference_geo", "speed"}
UNSUPPORTED = {
    "container": "code execution containers",
    "mcp_servers": "remote MCP servers (use Glyph)",
    "diagnostics": "cache diagnostics",
}


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class MessagesRequest:
    """A validated Messages body and the chat body it becomes."""

    model: str
    chat: dict[str, Any]  # an OpenAI chat body, with "model", "stream" and "omen", for parse_chat_request
    stream: bool
    thinking: bool  # the client asked for thinking blocks
    ignored: tuple[str, ...] = ()  # fields accepted without effect (the request log names them)
    translated: tuple[str, ...] = ()  # fields carried over in another form




def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise invalid(f"{where}: Input should be an object", where)
    return v


def _mapped(where: str, exc: Unmappable) -> OmenError:
    return invalid(f"{where}: {exc}", where)


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid(f"{where}.text: Input should be a string", f"{where}.text")
    if not text:
        raise invalid(f"{where}.text: text content blocks must be non-empty", f"{where}.text")
    return text


def _with_cache(part: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """Keep a block's ``cache_control`` on its chat part (the Anthropic adapter honours it)."""
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _media(block: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        part = image_part(block) if block["type"] == "image" else file_part(block)
    except Unmappable as exc:
        raise _mapped(f"{where}.source", exc) from None
    return _with_cache(part, block)


def _system(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return {"role": "system", "content": raw} if raw else None
    if not isinstance(raw, list):
        raise invalid("system: Input should be a string or a list of text blocks", "system")
    parts = []
    for i, block in enumerate(raw):
        where = f"system[{i}]"
        if _obj(block, where).get("type") != "text":
            raise invalid(f"{where}.type: system blocks must be text blocks", f"{where}.type")
        parts.append(_with_cache({"type": "text", "text": _text(block, where)}, block))
    return {"role": "system", "content": parts} if parts else None


def _system_message(content: Any, where: str) -> dict[str, Any]:
    """A ``role: "system"`` entry of ``messages``: a chat system message at that point."""
    if isinstance(content, str):
        if not content:
            raise invalid(f"{where}.content: text content must be non-empty", f"{where}.content")
        return {"role": "system", "content": content}
    if not isinstance(content, list) or not content:
        raise invalid(f"{where}.content: Input should be a string or a list of text blocks", f"{where}.content")
    parts = []
    for j, block in enumerate(content):
        bw = f"{where}.content[{j}]"
        if _obj(block, bw).get("type") != "text":
            raise invalid(f"{bw}.type: system messages take text blocks", f"{bw}.type")
        parts.append(_with_cache({"type": "text", "text": _text(block, bw)}, block))
    plain = all("cache_control" not in p for p in parts)
    return {"role": "system", "content": "".join(p["text"] for p in parts) if plain else parts}


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{where}.tool_use_id: Input should be a non-empty string", f"{where}.tool_use_id")
    content = block.get("content", "")
    prefix = "(error) " if block.get("is_error") is True else ""
    if isinstance(content, str):
        return {"role": "tool", "tool_call_id": call_id, "content": prefix + content}
    if not isinstance(content, list):
        raise invalid(f"{where}.content: Input should be a string or a list of blocks", f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, inner in enumerate(content):
        iw = f"{where}.content[{j}]"
        kind = _obj(inner, iw).get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text(inner, iw)})
        elif kind in ("image", "document"):
            parts.append(_media(inner, iw))
        else:
            raise invalid(f"{iw}.type: tool results take text, image and document blocks", f"{iw}.type")
    if all(p["type"] == "text" for p in parts):
        return {"role": "tool", "tool_call_id": call_id, "content": prefix + "".join(p["text"] for p in parts)}
    if prefix:
        parts.insert(0, {"type": "text", "text": prefix.strip()})
    return {"role": "tool", "tool_call_id": call_id, "content": parts}


def _user(content: list[Any], where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results (as tool messages, first), then the rest as one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        bw = f"{where}.content[{j}]"
        kind = _obj(block, bw).get("type")
        if kind == "text":
            parts.append(_with_cache({"type": "text", "text": _text(block, bw)}, block))
        elif kind in ("image", "document"):
            parts.append(_media(block, bw))
        elif kind == "tool_result":
            results.append(_tool_result(block, bw))
        else:
            raise invalid(f"{bw}.type: user content takes text, image, document and tool_result blocks (not {kind!r})", f"{bw}.type")
    out = results
    if parts:
        plain = all(p["type"] == "text" and "cache_control" not in p for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if plain else parts})
    return out


def _assistant(content: list[Any], where: str) -> dict[str, Any] | None:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        bw = f"{where}.content[{j}]"
        kind = _obj(block, bw).get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise invalid(f"{bw}.text: Input should be a string", f"{bw}.text")
            if text:
                parts.append(_with_cache({"type": "text", "text": text}, block))
        elif kind == "tool_use":
            call_id, name, args = block.get("id"), block.get("name"), block.get("input")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"{bw}.id: Input should be a non-empty string", f"{bw}.id")
            if not isinstance(name, str) or not name:
                raise invalid(f"{bw}.name: Input should be a non-empty string", f"{bw}.name")
            if not isinstance(args, dict):
                raise invalid(f"{bw}.input: Input should be an object", f"{bw}.input")
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": jsonutil.dumps(args).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(block)  # as sent: only an Anthropic upstream gets them, signatures intact
        else:
            raise invalid(f"{bw}.type: assistant content takes text, tool_use and thinking blocks (not {kind!r})", f"{bw}.type")
    if not parts and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant"}
    plain = all("cache_control" not in p for p in parts)
    message["content"] = ("".join(p["text"] for p in parts) if plain else parts) if parts else None
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise invalid("messages: at least one message is required", "messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        role = _obj(m, where).get("role")
        if role == "system":  # newer clients place system text mid-conversation; kept in place
            out.append(_system_message(m.get("content"), where))
            continue
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: Input should be 'user' or 'assistant'", f"{where}.role")
        content = m.get("content")
        if isinstance(content, str):
            if not content and not (role == "assistant" and i == len(raw) - 1):
                raise invalid(f"{where}.content: text content must be non-empty", f"{where}.content")
            if content:
                out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise invalid(f"{where}.content: Input should be a string or a list of content blocks", f"{where}.content")
        if role == "user":
            out.extend(_user(content, where))
        else:
            message = _assistant(content, where)
            if message is not None:
                out.append(message)
    if not out:
        raise invalid("messages: the conversation has no content", "messages")
    if all(m["role"] == "system" for m in out):
        raise invalid("messages: at least one user or assistant message is required", "messages")
    return out


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise invalid("tools: Input should be a list", "tools")
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        kind = _obj(tool, where).get("type")
        if kind not in (None, "custom"):
            raise invalid(f"{where}.type: server tool {kind!r} is not supported; OMEN routes client tools only", f"{where}.type")
        if not isinstance(tool.get("name"), str) or not TOOL_NAME.match(tool["name"]):
            raise invalid(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'", f"{where}.name")
        if not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"{where}.input_schema: Input should be a JSON Schema object", f"{where}.input_schema")
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise invalid(f"{where}.description: Input should be a string", f"{where}.description")
    return tools_from_anthropic(raw)


def _tool_choice(raw: Any, names: set[str]) -> tuple[Any, bool]:
    choice = _obj(raw, "tool_choice")
    if choice.get("type") not in TOOL_CHOICES:
        raise invalid(f"tool_choice.type: Input should be one of {', '.join(TOOL_CHOICES)}", "tool_choice.type")
    if choice["type"] == "tool" and choice.get("name") not in names:
        raise invalid("tool_choice.name: must name one of the tools", "tool_choice.name")
    if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
        raise invalid("tool_choice.disable_parallel_tool_use: Input should be a boolean", "tool_choice.disable_parallel_tool_use")
    return tool_choice_from_anthropic(choice)


def _thinking(raw: Any, max_tokens: int | None) -> tuple[str | None, bool]:
    """(reasoning_effort, thinking blocks wanted) for the ``thinking`` config."""
    if raw is None:
        return None, False
    thinking = _obj(raw, "thinking")
    kind = thinking.get("type")
    if kind == "disabled":
        return None, False
    if kind == "adaptive":
        return "medium", True
    if kind != "enabled":
        raise invalid("thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'", "thinking.type")
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
        raise invalid("thinking.budget_tokens: Input should be an integer >= 1024", "thinking.budget_tokens")
    if max_tokens is not None and budget >= max_tokens:
        raise invalid("thinking.budget_tokens: must be less than max_tokens", "thinking.budget_tokens")
    return effort_for_budget(budget), True


def _output_config(raw: Any, chat: dict[str, Any]) -> None:
    config = _obj(raw, "output_config")
    effort = config.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise invalid(f"output_config.effort: Input should be one of {', '.join(EFFORTS)}", "output_config.effort")
        chat.setdefault("reasoning_effort", EFFORTS[effort])
    fmt = config.get("format")
    if fmt is not None:
        fmt = _obj(fmt, "output_config.format")
        if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise invalid("output_config.format: Input should be {type: 'json_schema', schema: {...}}", "output_config.format")
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _sampling(raw: dict[str, Any], chat: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        v = raw.get(key)
        if v is not None:
            if not is_num(v) or not 0 <= v <= 1:
                raise invalid(f"{key}: Input should be a number from 0 to 1", key)
            chat[key] = v
    top_k = raw.get("top_k")
    if top_k is not None:
        if not is_int(top_k) or top_k < 0:
            raise invalid("top_k: Input should be an integer >= 0", "top_k")
        if top_k:
            chat["top_k"] = top_k
    stop = raw.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise invalid("stop_sequences: Input should be a list of non-empty strings", "stop_sequences")
        if stop:
            chat["stop"] = stop
    metadata = raw.get("metadata")
    if metadata is not None:
        user = _obj(metadata, "metadata").get("user_id")
        if user is not None:
            if not isinstance(user, str) or len(user) > 256:
                raise invalid("metadata.user_id: Input should be a string of at most 256 characters", "metadata.user_id")
            if user:
                chat["user"] = user


def _check_fields(raw: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in raw:
        if key in UNSUPPORTED:
            raise invalid(f"{key}: {UNSUPPORTED[key]} are not supported by OMEN's /v1/messages", key)
        if key not in allowed:
            raise invalid(f"{key}: Extra inputs are not permitted", key)


def _common(raw: Any, allowed: frozenset[str], max_tokens: int | None) -> tuple[str, dict[str, Any], bool]:
    """Fields shared by messages and count_tokens: (model, chat body, thinking wanted)."""
    if not isinstance(raw, dict):
        raise invalid("the request body must be a JSON object")
    _check_fields(raw, allowed)
    model = raw.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise invalid("model: Input should be a non-empty string ('auto' lets OMEN choose)", "model")
    messages = _messages(raw.get("messages"))
    system = _system(raw.get("system"))
    chat: dict[str, Any] = {"model": model, "messages": [system, *messages] if system else messages}
    if raw.get("tools") is not None:
        tools = _tools(raw["tools"])
        if tools:
            chat["tools"] = tools
    if raw.get("tool_choice") is not None:
        names = {t["function"]["name"] for t in chat.get("tools", [])}
        choice, parallel = _tool_choice(raw["tool_choice"], names)
        if "tools" in chat:
            chat["tool_choice"] = choice
            if not parallel:
                chat["parallel_tool_calls"] = False
    effort, thinking = _thinking(raw.get("thinking"), max_tokens)
    if effort is not None:
        chat["reasoning_effort"] = effort
    if raw.get("output_config") is not None:
        _output_config(raw["output_config"], chat)
    if raw.get("omen") is not None:
        chat["omen"] = raw["omen"]
    return model, chat, thinking


def parse_messages_request(raw: Any) -> MessagesRequest:
    """Validate a decoded ``/v1/messages`` body; raise a 400 :class:`OmenError` naming the field."""
    max_tokens = raw.get("max_tokens") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise invalid("max_tokens: Field required: an integer >= 1", "max_tokens")
    model, chat, thinking = _common(raw, FIELDS, max_tokens)
    _sampling(raw, chat)
    chat["max_completion_tokens"] = max_tokens
    stream = raw.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean", "stream")
    chat["stream"] = stream
    edits = raw.get("context_management")
    if edits is not None:
        chat["context_management"] = _obj(edits, "context_management")  # for Anthropic upstreams
    ignored = tuple(k for k in IGNORED if k in raw)
    translated = tuple(k for k in TRANSLATED if raw.get(k) is not None)
    return MessagesRequest(model=model, chat=chat, stream=stream, thinking=thinking, ignored=ignored, translated=translated)


def parse_count_tokens_request(raw: Any) -> tuple[str, dict[str, Any]]:
    """Validate a ``/v1/messages/count_tokens`` body: (model, chat body)."""
    model, chat, _ = _common(raw, COUNT_FIELDS, None)
    return model, chat
