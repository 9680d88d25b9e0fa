"""OpenAI chat <-> Anthropic Messages: the vocabulary both directions share.

The Anthropic adapter (``providers/anthropic.py``) translates chat -> Messages on the way
up and Messages -> chat on the way back; the ``/v1/messages`` door (``api/messages.py``,
``server/messages_encode.py``) does the reverse. The tables and block converters that are
each other's inverse live here, side by side, so the two directions cannot drift apart.

Everything is pure. Input one side cannot express raises :class:`Unmappable`; each
caller turns it into its own error (an ``unsupported`` UpstreamError upstream, a 400 at
the door).
"""

from __future__ import annotations

from typing import Any

from ..providers.base import Usage

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason (a matched stop sequence is reported by
# OpenAI as plain "stop", so it comes back as end_turn).
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# OpenAI reasoning_effort -> Anthropic thinking budget_tokens.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}


class Unmappable(ValueError):
    """This input has no counterpart on the other side."""


# ---------------------------------------------------------------- stop reasons, usage, effort


def finish_reason(stop_reason: Any) -> str:
    """Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (unknown reasons count as stop)."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: Any) -> str:
    """OpenAI ``finish_reason`` -> Anthropic ``stop_reason`` (unknown reasons count as end_turn)."""
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)  # a count: never negative, so no quota is credited back
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_anthropic(raw: Any) -> Usage:
    """Anthropic usage -> :class:`Usage`; prompt tokens include cache reads and writes."""
    if not isinstance(raw, dict):
        return Usage()
    cached = _int(raw, "cache_read_input_tokens")
    written = _int(raw, "cache_creation_input_tokens")
    details = raw.get("output_tokens_details")
    return Usage(
        prompt_tokens=_int(raw, "input_tokens") + cached + written,
        completion_tokens=_int(raw, "output_tokens"),
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=_int(details, "thinking_tokens") if isinstance(details, dict) else 0,
    )


def usage_to_anthropic(usage: Usage) -> dict[str, Any]:
    """:class:`Usage` -> Anthropic usage: ``input_tokens`` excludes cache reads and writes."""
    fresh = max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens)
    return {
        "input_tokens": fresh,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def effort_for_budget(budget_tokens: int) -> str:
    """The largest ``reasoning_effort`` whose thinking budget fits ``budget_tokens`` (at least low)."""
    best = "low"
    for effort, budget in THINKING_BUDGETS.items():
        if budget <= budget_tokens:
            best = effort
    return best


# ---------------------------------------------------------------- images and documents


def parse_data_url(url: str) -> tuple[str, str]:
    """``data:<type>;base64,<data>`` -> (media type, base64 data)."""
    head, sep, data = url.partition(",")
    if not url.startswith("data:") or not sep or not head.endswith(";base64"):
        raise Unmappable("Anthropic needs data: URLs to be base64-encoded")
    return head[len("data:") : -len(";base64")].split(";")[0].strip().lower(), data


def image_block(part: dict[str, Any]) -> dict[str, Any]:
    """OpenAI ``image_url`` part -> Anthropic ``image`` block."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise Unmappable("image_url part without a url")
    if url.startswith("data:"):
        media_type, data = parse_data_url(url)
        if media_type not in IMAGE_MEDIA_TYPES:
            raise Unmappable(f"Anthropic cannot take images of type {media_type!r}")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Unmappable("Anthropic takes images as base64 data: URLs or http(s) URLs")


def image_part(block: dict[str, Any]) -> dict[str, Any]:
    """Anthropic ``image`` block -> OpenAI ``image_url`` part (the inverse of :func:`image_block`)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise Unmappable("image block without a source")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_MEDIA_TYPES or not isinstance(data, str) or not data:
            raise Unmappable(f"image source.media_type must be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))} with base64 data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url" and isinstance(source.get("url"), str) and source["url"].startswith(("http://", "https://")):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise Unmappable("image source must be base64 data or an http(s) url (Files API ids are not supported)")


def document_block(part: dict[str, Any]) -> dict[str, Any]:
    """OpenAI ``file`` part with inline PDF data -> Anthropic ``document`` block."""
    file = part.get("file") or {}
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise Unmappable("Anthropic takes file parts only as inline base64 file_data")
    media_type, data = parse_data_url(data_url)
    if media_type != "application/pdf":
        raise Unmappable(f"Anthropic cannot take files of type {media_type!r}")
    block: dict[str, Any] = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def file_part(block: dict[str, Any]) -> dict[str, Any]:
    """Anthropic base64 PDF ``document`` block -> OpenAI ``file`` part (the inverse of :func:`document_block`)."""
    source = block.get("source")
    if not (
        isinstance(source, dict)
        and source.get("type") == "base64"
        and source.get("media_type") == "application/pdf"
        and isinstance(source.get("data"), str)
    ):
        raise Unmappable("only base64 PDF documents are supported (text, url and Files API sources are not)")
    file: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{source['data']}"}
    if isinstance(block.get("title"), str):
        file["filename"] = block["title"]
    return {"type": "file", "file": file}


# ---------------------------------------------------------------- tools


def tools_to_anthropic(tools: list[Any]) -> list[dict[str, Any]]:
    """OpenAI function tools -> Anthropic client tools."""
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise Unmappable("Anthropic takes only function tools")
        fn = tool.get("function") or {}
        spec: dict[str, Any] = {
            "name": fn.get("name") or "",
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            spec["description"] = fn["description"]
        out.append(spec)
    return out


def tools_from_anthropic(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic client tools (already validated) -> OpenAI function tools."""
    out = []
    for tool in tools:
        fn: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def tool_choice_to_anthropic(choice: Any) -> dict[str, Any]:
    """OpenAI ``tool_choice`` -> Anthropic ``tool_choice``."""
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise Unmappable(f"Anthropic cannot take tool_choice {choice!r}")


def tool_choice_from_anthropic(choice: dict[str, Any]) -> tuple[Any, bool]:
    """Anthropic ``tool_choice`` (already validated) -> (OpenAI ``tool_choice``, parallel calls allowed)."""
    kind = choice["type"]
    parallel = not choice.get("disable_parallel_tool_use", False)
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return "auto", parallel


# ---------------------------------------------------------------- what other upstreams must not see

# Anthropic extensions the /v1/messages door keeps on a chat body for the Anthropic adapter:
# on a message, its thinking blocks (signatures included); on a content part, cache_control.
MESSAGE_EXTENSIONS = ("thinking_blocks",)
PART_EXTENSIONS = ("cache_control",)
# On the body, the client's context_management (Anthropic's server-side edits; nothing to
# clear elsewhere, since thinking is not sent to other upstreams).
BODY_EXTENSIONS: tuple[str, ...] = ("context_management",)  # top_k stays: local OpenAI-compatible servers take it


_PART_KEYS = frozenset(PART_EXTENSIONS)
_MESSAGE_KEYS = frozenset((*MESSAGE_EXTENSIONS, *PART_EXTENSIONS))


def _clean_part(part: Any) -> Any:
    if isinstance(part, dict) and not _PART_KEYS.isdisjoint(part):
        return {k: v for k, v in part.items() if k not in _PART_KEYS}
    return part


def _clean_message(m: Any) -> Any:
    """``m`` itself when it has nothing to clean (every request's messages pass here: set
    tests over the keys, not a generator per message)."""
    if not isinstance(m, dict):
        return m
    content = m.get("content")
    parts: list[Any] = content if isinstance(content, list) else []
    parts_dirty = any(isinstance(p, dict) and not _PART_KEYS.isdisjoint(p) for p in parts)
    if not parts_dirty and _MESSAGE_KEYS.isdisjoint(m):
        return m
    out = {k: v for k, v in m.items() if k not in _MESSAGE_KEYS}
    if parts_dirty:
        out["content"] = [_clean_part(p) for p in parts]
    return out


def without_anthropic_extensions(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the Anthropic-only fields an OpenAI-compatible server does not take
    (``cache_control``, thinking blocks); the same object when it has none."""
    messages = body.get("messages")
    listed: list[Any] = messages if isinstance(messages, list) else []
    cleaned: list[Any] | None = None  # made at the first message that changes (most requests: none)
    for i, m in enumerate(listed):
        c = _clean_message(m)
        if c is not m and cleaned is None:
            cleaned = listed[:i]
        if cleaned is not None:
            cleaned.append(c)
    if cleaned is None and not any(k in body for k in BODY_EXTENSIONS):
        return body
    out = {k: v for k, v in body.items() if k not in BODY_EXTENSIONS}
    if cleaned is not None:
        out["messages"] = cleaned
    return out
