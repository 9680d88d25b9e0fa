"""Turn OpenAI stream chunks (OMEN's, or Ollama's OpenAI-compatible ones) into events and
one Answer. Pure: no I/O, so the sync and async clients share it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .answer import (
    Answer,
    Event,
    Route,
    Swap,
    SwapEvent,
    TextDelta,
    ToolCall,
    ToolCallStarted,
    Usage,
    _Call,
)
from .errors import ProtocolError, StreamInterrupted


class Assembler:
    def __init__(self, route: Route, *, degraded: bool = False) -> None:
        self.route = route
        self.degraded = degraded
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.omen: dict[str, Any] | None = None
        self.swaps: list[Swap] = []
        self.done = False

    @property
    def partial(self) -> str:
        return "".join(self.text)

    def feed(self, data: str) -> list[Event]:
        """One SSE ``data`` payload; returns the events it carries."""
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProtocolError(f"a stream frame is not JSON: {data[:120]!r}") from None
        if not isinstance(chunk, dict):
            raise ProtocolError(f"a stream frame is not an object: {data[:120]!r}")
        error = chunk.get("error")
        if error is not None:  # OMEN: the upstream broke after content was sent
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            raise StreamInterrupted(str(message or "the stream failed"), partial=self.partial, code=code,
                                    degraded=self.degraded)
        events: list[Event] = []
        omen = chunk.get("omen")
        if isinstance(omen, dict):
            swap = omen.get("swap")
            if isinstance(swap, dict):
                events.append(self._swap(swap))
            else:
                self.omen = {**(self.omen or {}), **omen}
        usage = Usage.from_json(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise ProtocolError("a stream chunk has no choices list")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text.append(content)
                events.append(TextDelta(content))
            for tc in delta.get("tool_calls") or ():
                events.extend(self._tool_delta(tc))
            if choice.get("finish_reason") is not None:
                self.finish_reason = str(choice["finish_reason"])
        return events

    def _swap(self, raw: dict[str, Any]) -> SwapEvent:
        swap = Swap(str(raw.get("from", "")), str(raw.get("to", "")), int(raw.get("discard_chars") or 0))
        text = self.partial
        keep = max(0, len(text) - swap.discard_chars)
        self.text = [text[:keep]] if keep else []
        self.calls.clear()
        self.finish_reason = None
        self.swaps.append(swap)
        provider, _, model = swap.to.partition("/")
        if model:
            self.route = dataclasses.replace(self.route, provider=provider, model=model)
        return SwapEvent(swap)

    def _tool_delta(self, tc: Any) -> list[Event]:
        if not isinstance(tc, dict):
            raise ProtocolError("a tool_calls delta is not an object")
        index = tc.get("index", len(self.calls))
        call = self.calls.get(index)
        events: list[Event] = []
        if call is None:
            call = self.calls[index] = _Call()
        if tc.get("id"):
            call.id = str(tc["id"])
        fn = tc.get("function") or {}
        if fn.get("name") and not call.name:
            call.name = str(fn["name"])
            events.append(ToolCallStarted(index, call.name))
        if isinstance(fn.get("arguments"), str):
            call.args.append(fn["arguments"])
        return events

    def answer(self, **extra: Any) -> Answer:
        calls = tuple(
            ToolCall(c.id or f"call_{i}", c.name, "".join(c.args)) for i, c in sorted(self.calls.items())
        )
        return Answer(
            text=self.partial,
            tool_calls=calls,
            finish_reason=self.finish_reason,
            route=self.route,
            usage=self.usage,
            swaps=tuple(self.swaps),
            omen=self.omen,
            **extra,
        )
