"""``POST /v1/responses/compact``: Codex's history compaction, served by a summary.

Codex CLI calls it in long sessions when its provider is OpenAI's (the built-in provider
pointed at OMEN with ``OPENAI_BASE_URL``); a custom ``[model_providers.omen]`` compacts
locally through ``/v1/responses`` instead. The body is a Responses body without streaming
(``model``, ``input``, ``instructions``, ``tools``, ``parallel_tool_calls``, ``reasoning``,
``text``, ``service_tier``, ``prompt_cache_key``); the answer is ``{"output": [items]}``,
which Codex puts in place of its history.

OpenAI answers with an encrypted compaction item only its own models can read. OMEN routes
a summarisation request like any other (same candidates, limits, metering), and answers
with what Codex's own local compaction keeps: the conversation's user messages (the most
recent, within a bound), then one user message carrying the summary. Any upstream can
read that back.
"""

from __future__ import annotations

from typing import Any

from .responses import SUMMARY_PREFIX, SUMMARY_PROMPT, ResponsesRequest, parse_responses_request

__all__ = ["SUMMARY_PREFIX", "compacted_output", "parse_compact_request"]

KEPT_USER_CHARS = 80_000  # about 20,000 tokens of the user's own words, as Codex keeps locally
# User messages Codex writes itself (re-sent after compaction anyway): not the user's words.
_CONTEXT_TAGS = ("<environment_context>", "<user_instructions>", "<INSTRUCTIONS>", "# AGENTS.md instructions")


def parse_compact_request(raw: Any) -> ResponsesRequest:
    """Validate a compaction body as a Responses body (400s name the field), then turn it into
    the summarisation turn: no stream, nothing stored, no tool calls, the prompt last."""
    if isinstance(raw, dict):
        raw = {**raw, "stream": False, "store": False}
        if raw.get("tools"):
            raw["tool_choice"] = "none"  # tools stay declared: a history with calls needs them (Anthropic)
    parsed = parse_responses_request(raw)
    parsed.messages.append({"role": "user", "content": SUMMARY_PROMPT})
    return parsed


def _user_text(item: Any) -> str | None:
    """The text of a user message item (string or input_text parts), None for anything else."""
    if not isinstance(item, dict) or item.get("role") != "user" or item.get("type", "message") != "message":
        return None
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "input_text" and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def _message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def compacted_output(input_items: Any, summary: str) -> list[dict[str, Any]]:
    """The history that replaces ``input_items``: the user's own messages, newest kept first
    within :data:`KEPT_USER_CHARS` (in their order), then the summary as a user message."""
    if isinstance(input_items, str):  # a Responses input may be one user text
        input_items = [{"role": "user", "content": input_items}]
    texts = [t for t in (_user_text(i) for i in (input_items if isinstance(input_items, list) else [])) if t]
    texts = [t for t in texts if not t.lstrip().startswith(_CONTEXT_TAGS) and not t.startswith(SUMMARY_PREFIX)]
    kept: list[str] = []
    left = KEPT_USER_CHARS
    for text in reversed(texts):
        if left <= 0:
            break
        kept.append(text if len(text) <= left else text[-left:])
        left -= len(text)
    kept.reverse()
    return [*(_message(t) for t in kept), _message(f"{SUMMARY_PREFIX}\n{summary}")]
