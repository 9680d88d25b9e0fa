"""Offline token estimates for when a provider reports none (a stream cut short).

No tokenizer tables are downloaded: about four characters per token for text, a flat
cost per image and per message. Events built from estimates are marked as such.
"""

from __future__ import annotations

from typing import Any

_PER_MESSAGE = 4
_PER_IMAGE = 765  # OpenAI's high-detail 512px tile count ballpark


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for m in body.get("messages", ()):
        total += _PER_MESSAGE
        content = m.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "text":
                        total += text_tokens(str(part.get("text", "")))
                    else:
                        total += _PER_IMAGE
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += text_tokens(str(fn.get("name", ""))) + text_tokens(str(fn.get("arguments", "")))
    for tool in body.get("tools") or ():
        total += text_tokens(str(tool))
    return total
