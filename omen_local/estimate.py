"""Offline token estimates for when a provider reports none (a stream cut short, an
upstream that sends no usage in streams) and for worst-case budgets.

No tokenizer tables are downloaded: about four characters per token for text, JSON-ish
text (tool schemas, arguments) a little denser, a flat cost per image, and the chat
template's overhead per message and per request. Events built from estimates are marked
as such. Every input is tolerated: a field of the wrong type counts as nothing.
"""

from __future__ import annotations

from typing import Any

from . import jsonutil

_PER_MESSAGE = 4  # role markers and separators of a chat template
_PER_REQUEST = 3  # the assistant turn's opening
_PER_IMAGE = 765  # OpenAI's high-detail 512px tile count ballpark
_PER_TOOL = 8  # the template's tool wrapper


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _json_tokens(value: Any) -> int:
    """Tokens of a JSON value written compactly (schemas, arguments): about 3 characters each."""
    try:
        return (len(jsonutil.dumps(value)) + 2) // 3
    except (TypeError, ValueError):
        return 0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            elif part.get("type") in ("image_url", "input_image", "image"):
                total += _PER_IMAGE
            else:
                total += _json_tokens(part)
    return total


def prompt_tokens(body: dict[str, Any]) -> int:
    total = _PER_REQUEST
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            continue
        total += _PER_MESSAGE + _content_tokens(m.get("content"))
        calls = m.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += text_tokens(str(fn.get("name", ""))) + text_tokens(str(fn.get("arguments", "")))
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        total += _PER_TOOL + _json_tokens(tool)
    return total
