"""Answers in the OpenAI Responses shape: a ``response`` object, or its typed SSE events.

Streams follow the documented order: ``response.created``, ``response.in_progress``;
per output item ``response.output_item.added``, then for a message
``response.content_part.added``, ``response.output_text.delta``...,
``response.output_text.done``, ``response.content_part.done``, and for a function call
``response.function_call_arguments.delta``..., ``response.function_call_arguments.done``;
then ``response.output_item.done``; finally ``response.completed`` (or
``response.incomplete`` at the token limit) with usage. Every event carries a
``sequence_number``. A failure after the start is an ``error`` event followed by
``response.failed``, never a ``response.completed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .. import jsonutil
from ..api.responses import compaction_item
from ..api.responses_tools import ToolName, ToolSet
from ..errors import OmenError
from ..providers.base import Chunk, Completion, Usage

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def status_for(finish: str | None) -> tuple[str, dict[str, Any] | None]:
    """(response status, incomplete_details) for a chat finish_reason."""
    reason = INCOMPLETE.get(finish or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    echo: dict[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    error: dict[str, Any] | None = None,
    incomplete: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        **echo,
        "model": model,
        "output": output,
        "service_tier": "default",
        "usage": None if usage is None else usage_object(usage),
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [_text_part(text)]}


def _call_item(item_id: str, call_id: str, tool: ToolName, arguments: str, status: str) -> dict[str, Any]:
    """A call as the client named the tool: ``namespace`` + ``name``, or a custom tool's call."""
    if tool.custom:
        item = {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call_id, "name": tool.name, "input": _custom_input(arguments)}
    else:
        item = {"id": item_id, "type": "function_call", "status": status, "arguments": arguments, "call_id": call_id, "name": tool.name}
    if tool.namespace is not None:
        item["namespace"] = tool.namespace
    return item


def _custom_input(arguments: str) -> str:
    """A custom tool's free-form input from the one-string function it went upstream as."""
    try:
        value = jsonutil.loads(arguments) if arguments else {}
    except ValueError:
        return arguments
    text = value.get("input") if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments


def output_from_completion(done: Completion, tools: ToolSet) -> tuple[list[dict[str, Any]], str | None]:
    """(output items, finish_reason) of a ``chat.completion``: the message, then its function calls."""
    choice = (done.body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in INCOMPLETE else "completed"
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    calls = message.get("tool_calls") or []
    items: list[dict[str, Any]] = []
    if text or not calls:
        items.append(_message_item(new_id("msg"), text, status))
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        tool = tools.client_name(fn.get("name") or "")
        items.append(_call_item(new_id("ctc" if tool.custom else "fc"), call.get("id") or new_id("call"), tool, args if isinstance(args, str) else "{}", "completed"))
    return items, finish


class ResponsesEncoder:
    """Normalized chunks of one answer -> Responses stream events."""

    def __init__(self, response_id: str, created_at: int, model: str, echo: dict[str, Any], tools: ToolSet | None = None) -> None:
        self.id = response_id
        self.tools = tools or ToolSet()
        self.created_at = created_at
        self.model = model
        self.echo = echo
        self.items: list[dict[str, Any]] = []  # output items, final as they close
        self._seq = 0
        self._message: int | None = None  # output index of the open message item
        self._calls: dict[int, int] = {}  # OpenAI tool-call index -> output index
        self._args: dict[int, str] = {}  # output index -> the chat arguments so far (custom tools keep input)
        self._open_calls: list[int] = []
        self._finish: str | None = None
        self.final: dict[str, Any] | None = None  # the response object, once the answer is whole
        self.failed = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + jsonutil.dumps(data) + b"\n\n"

    def _response(self, status: str, usage: Usage | None = None, **extra: Any) -> dict[str, Any]:
        return response_object(self.id, self.created_at, self.model, self.echo, status=status, output=list(self.items), usage=usage, **extra)

    def start(self) -> bytes:
        return self._event("response.created", response=self._response("in_progress")) + self._event(
            "response.in_progress", response=self._response("in_progress")
        )

    # ------------------------------------------------------------ items

    def _open_message(self) -> bytes:
        out = self._close_calls()
        index = len(self.items)
        item = _message_item(new_id("msg"), "", "in_progress")
        item["content"] = []
        self.items.append(item)
        self._message = index
        out += self._event("response.output_item.added", output_index=index, item=dict(item, content=[]))
        item["content"] = [_text_part("")]
        return out + self._event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=_text_part(""))

    def _close_message(self, status: str = "completed") -> bytes:
        if self._message is None:
            return b""
        index, self._message = self._message, None
        item = self.items[index]
        text = item["content"][0]["text"]
        item["status"] = status
        return (
            self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text, logprobs=[])
            + self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=_text_part(text))
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _close_calls(self) -> bytes:
        out = b""
        for index in self._open_calls:
            item = self.items[index]
            item["status"] = "completed"
            if item["type"] == "custom_tool_call":
                item["input"] = _custom_input(self._args.get(index, ""))
                out += self._event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index, input=item["input"])
            else:
                out += self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index, name=item["name"], arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._open_calls.clear()
        return out

    def _text(self, text: str) -> bytes:
        out = self._open_message() if self._message is None else b""
        index = self._message
        assert index is not None
        item = self.items[index]
        item["content"][0]["text"] += text
        return out + self._event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0, delta=text, logprobs=[])

    def _tool_call(self, call: dict[str, Any], position: int) -> bytes:
        key = call.get("index", position)
        fn = call.get("function") or {}
        args = fn.get("arguments") or ""
        out = b""
        index = self._calls.get(key)
        if index is None:
            out = self._close_message()
            index = len(self.items)
            tool = self.tools.client_name(fn.get("name") or "")
            item = _call_item(new_id("ctc" if tool.custom else "fc"), call.get("id") or new_id("call"), tool, "", "in_progress")
            self.items.append(item)
            self._calls[key] = index
            self._open_calls.append(index)
            out += self._event("response.output_item.added", output_index=index, item=dict(item))
        item = self.items[index]
        if args:
            self._args[index] = self._args.get(index, "") + args
            if item["type"] == "custom_tool_call":
                if index not in self._open_calls:  # a late piece of a closed call completes the final object
                    item["input"] = _custom_input(self._args[index])
            else:
                item["arguments"] += args
                if index in self._open_calls:  # a late piece of a closed call only completes the final object
                    out += self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=args)
        return out

    # ------------------------------------------------------------ the FrameEncoder protocol

    def frames(self, batch: Iterable[Chunk]) -> bytes:
        """The frames of one upstream read's chunks, joined."""
        return b"".join(self.chunk(chunk) for chunk in batch)

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.omen is not None and "swap" in chunk.omen:
            out += self._close_message()  # another model takes over: its answer is a new message item
        text = chunk.delta.get("content")
        if isinstance(text, str) and text:
            out += self._text(text)
        for position, call in enumerate(chunk.delta.get("tool_calls") or ()):
            if isinstance(call, dict):
                out += self._tool_call(call, position)
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        return out

    def finish(self, usage: Usage) -> bytes:
        status, incomplete = status_for(self._finish)
        out = self._open_message() if not self.items else b""  # an empty answer is an empty message
        out += self._close_message("incomplete" if incomplete else "completed") + self._close_calls()
        kind = "response.incomplete" if incomplete else "response.completed"
        self.final = self._response(status, usage, incomplete=incomplete)
        return out + self._event(kind, response=self.final)

    def error(self, err: OmenError) -> bytes:
        self.failed = True
        failed = self._response("failed", error={"code": "server_error", "message": err.message})
        return self._event("error", code=err.code, message=err.message, param=None) + self._event("response.failed", response=failed)


class CompactionEncoder(ResponsesEncoder):
    """A compaction answer (the input ended in ``compaction_trigger``): the summary's text is
    gathered, not streamed, and goes out as one ``compaction`` item when it is whole (what
    Codex keeps as its checkpoint); tool calls have no place in it and are dropped."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._summary: list[str] = []

    def chunk(self, chunk: Chunk) -> bytes:
        text = chunk.delta.get("content")
        if isinstance(text, str) and text:
            self._summary.append(text)
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        return b""

    def finish(self, usage: Usage) -> bytes:
        item = compaction_item("".join(self._summary))
        self.items.append(item)
        out = self._event("response.output_item.added", output_index=0, item=item)
        out += self._event("response.output_item.done", output_index=0, item=item)
        self.final = self._response("completed", usage)
        return out + self._event("response.completed", response=self.final)
