"""Images and files inside tool results, placed where OpenAI-compatible servers take them.

Anthropic's ``tool_result`` blocks may hold images (a screenshot tool, Claude Code's Read
on a PNG); OpenAI's ``role: "tool"`` messages take text only, and the tool messages of one
assistant turn must follow it without a break. So the media move to one user message right
after the run of tool messages, each tool message keeping its text and saying where its
media went.
"""

from __future__ import annotations

from typing import Any

MEDIA_PARTS = frozenset({"image_url", "file", "input_audio"})


def _split(m: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    content = m.get("content")
    if not isinstance(content, list):
        return m, []
    media = [p for p in content if isinstance(p, dict) and p.get("type") in MEDIA_PARTS]
    if not media:
        return m, []
    text = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    note = f"[{len(media)} attachment(s) from this tool result follow in the next user message]"
    return {**m, "content": f"{text}\n{note}" if text else note}, media


def tool_media_to_user(messages: list[Any]) -> list[Any]:
    """``messages`` with tool-result media moved after their tool messages (the same list when none)."""
    if not any(isinstance(m, dict) and m.get("role") == "tool" and isinstance(m.get("content"), list) for m in messages):
        return messages
    out: list[Any] = []
    pending: list[dict[str, Any]] = []
    for m in messages:
        is_tool = isinstance(m, dict) and m.get("role") == "tool"
        if pending and not is_tool:
            out.append({"role": "user", "content": pending})
            pending = []
        if is_tool:
            m, media = _split(m)
            if media:
                pending += [{"type": "text", "text": f"Attachments from tool call {m.get('tool_call_id', '')}:"}, *media]
        out.append(m)
    if pending:
        out.append({"role": "user", "content": pending})
    return out
