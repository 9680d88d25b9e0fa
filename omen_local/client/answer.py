"""The routing facts of an answer and the events of a stream, as typed values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .hints import Unhonoured


@dataclass(frozen=True, slots=True)
class Route:
    """Who answered and how: OMEN's ``x-omen-*`` headers, or the local model (degraded)."""

    provider: str | None
    model: str | None
    strategy: str | None
    request_id: str | None
    intent: str | None = None
    degraded: bool = False
    alias: str | None = None  # the alias the model name was (x-omen-alias)

    @property
    def target(self) -> str:
        return f"{self.provider}/{self.model}" if self.provider else str(self.model)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_json(cls, raw: Any) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        p, c = raw.get("prompt_tokens"), raw.get("completion_tokens")
        p = p if isinstance(p, int) else 0
        c = c if isinstance(c, int) else 0
        t = raw.get("total_tokens")
        return cls(p, c, t if isinstance(t, int) else p + c)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text as the model wrote it

    def parsed(self) -> dict[str, Any]:
        """The arguments as an object; ValueError names what is wrong."""
        if not self.arguments.strip():
            return {}
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
        return value

    def to_message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class Swap:
    """speculate_k replaced the fast answer by a preferred one: drop ``discard_chars``
    characters already shown and show what follows."""

    previous: str  # "provider/model"
    to: str
    discard_chars: int


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    route: Route
    usage: Usage | None = None
    cost_usd: float | None = None  # the request's cost, every attempt (race losers too); 0 degraded
    swaps: tuple[Swap, ...] = ()
    omen: dict[str, Any] | None = None  # OMEN's notes (parallel_merge metadata, ...)
    banner: str | None = None  # one line to show while degraded
    unhonoured: tuple[Unhonoured, ...] = ()

    @property
    def degraded(self) -> bool:
        return self.route.degraded

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        # content null only beside tool calls (Ollama and OpenAI both refuse a bare null)
        msg: dict[str, Any] = {"role": "assistant", "content": self.text or (None if self.tool_calls else "")}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_message() for c in self.tool_calls]
        return msg


# ------------------------------------------------------------------ stream events


@dataclass(frozen=True, slots=True)
class Started:
    """The route is known (headers arrived); ``banner`` is set when degraded."""

    route: Route
    banner: str | None = None
    unhonoured: tuple[Unhonoured, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class SwapEvent:
    swap: Swap


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    index: int
    name: str


@dataclass(frozen=True, slots=True)
class Done:
    answer: Answer


Event = Started | TextDelta | SwapEvent | ToolCallStarted | Done


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)
