"""Answers in the Anthropic Messages shape: a ``message`` object, or its SSE events.

:func:`message_from_completion` turns a whole ``chat.completion`` into a ``message``;
:class:`MessagesEncoder` turns normalized chunks into the documented event order:
``message_start``, ``ping``, then per content block ``content_block_start``,
``content_block_delta``..., ``content_block_stop``, then ``message_delta`` (stop reason
and usage, known only at the end) and ``message_stop``. A failure after the start is an
``error`` event and nothing after it, so no client mistakes a cut answer for a whole one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .. import jsonutil
from ..errors import OmenError
from ..providers.base import Chunk, Completion, Usage
from ..wire.anthropic import stop_reason, usage_to_anthropic

# Anthropic's error type per HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(err: OmenError, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}``; OMEN's code goes in the message."""
    message = err.message if err.code is None else f"{err.message} ({err.code})"
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type(err.status), "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's ``input`` must be ({} if they are not one)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = jsonutil.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except jsonutil.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def new_tool_id() -> str:
    return "toolu_" + os.urandom(12).hex()


def message_from_completion(done: Completion, message_id: str, model: str, *, thinking: bool) -> dict[str, Any]:
    """A ``chat.completion`` -> an Anthropic ``message`` (thinking first, then text, then tool uses)."""
    choice = (done.body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    signed = message.get("thinking_blocks")
    if thinking and isinstance(signed, list) and signed:
        content.extend(b for b in signed if isinstance(b, dict))  # an Anthropic upstream's, byte for byte
    elif thinking and isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_tool_id(),
                "name": fn.get("name") or "",
                "input": tool_input(fn.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage_to_anthropic(done.usage),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + jsonutil.dumps(data) + b"\n\n"


class MessagesEncoder:
    """Normalized chunks of one answer -> Anthropic stream events.

    One content block is open at a time, as Anthropic streams them; a tool call's later
    argument pieces go to its own block index.
    """

    def __init__(self, message_id: str, model: str, *, thinking: bool, input_estimate: int) -> None:
        self.id = message_id
        self.model = model
        self.thinking = thinking
        self.input_estimate = input_estimate
        self._blocks = 0  # content blocks started
        self._open: tuple[str, int] | None = None  # (kind, index) of the open block
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._stop: str | None = None

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_estimate,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return _event("message_start", {"type": "message_start", "message": message}) + _event("ping", {"type": "ping"})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index = self._open[1]
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _begin(self, kind: str, block: dict[str, Any]) -> tuple[bytes, int]:
        out = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = (kind, index)
        out += _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        return out, index

    def _delta(self, kind: str, block: dict[str, Any], delta: dict[str, Any]) -> bytes:
        """A delta to the open block of ``kind``, opening one first if needed."""
        out = b""
        if self._open is None or self._open[0] != kind:
            out, _ = self._begin(kind, block)
        assert self._open is not None
        return out + _event("content_block_delta", {"type": "content_block_delta", "index": self._open[1], "delta": delta})

    def _tool_call(self, call: dict[str, Any], position: int) -> bytes:
        index = call.get("index", position)
        fn = call.get("function") or {}
        args = fn.get("arguments") or ""
        out = b""
        block = self._tools.get(index)
        if block is None:
            block_start: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or new_tool_id(), "name": fn.get("name") or "", "input": {}}
            out, block = self._begin("tool_use", block_start)
            self._tools[index] = block
        if args:
            delta = {"type": "input_json_delta", "partial_json": args}
            out += _event("content_block_delta", {"type": "content_block_delta", "index": block, "delta": delta})
        return out

    def frames(self, batch: Iterable[Chunk]) -> bytes:
        """The frames of one upstream read's chunks, joined."""
        return b"".join(self.chunk(chunk) for chunk in batch)

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.omen is not None and "swap" in chunk.omen:
            out += self._close()  # another model takes over: its answer starts a new block
        delta = chunk.delta
        reasoning = delta.get("reasoning_content")
        if self.thinking and isinstance(reasoning, str) and reasoning:
            out += self._delta("thinking", {"type": "thinking", "thinking": "", "signature": ""}, {"type": "thinking_delta", "thinking": reasoning})
        signature = delta.get("reasoning_signature")  # an Anthropic upstream's, passed on unchanged
        if self.thinking and isinstance(signature, str) and signature:
            out += self._delta("thinking", {"type": "thinking", "thinking": "", "signature": ""}, {"type": "signature_delta", "signature": signature})
        redacted = delta.get("redacted_thinking")
        if self.thinking and isinstance(redacted, str) and redacted:
            begun, _ = self._begin("redacted_thinking", {"type": "redacted_thinking", "data": redacted})
            out += begun + self._close()
        text = delta.get("content")
        if isinstance(text, str) and text:
            out += self._delta("text", {"type": "text", "text": ""}, {"type": "text_delta", "text": text})
        for position, call in enumerate(delta.get("tool_calls") or ()):
            if isinstance(call, dict):
                out += self._tool_call(call, position)
        if chunk.finish_reason is not None:
            self._stop = stop_reason(chunk.finish_reason)
        return out

    def finish(self, usage: Usage) -> bytes:
        """The end of a whole answer: close the open block, stop reason and usage, message_stop."""
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None}, "usage": usage_to_anthropic(usage)}
        return self._close() + _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})

    def error(self, err: OmenError) -> bytes:
        """An ``error`` event: Anthropic's SDKs raise on it; nothing follows."""
        return _event("error", error_body(err))
