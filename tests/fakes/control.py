"""Fakes scripted over HTTP, for tests whose client is another process (the real agent CLIs).

``python -m tests.fakes.serve anthropic --control`` prints a second line, ``CONTROL <url>``:
a small server of its own (the fake's API surface stays exactly the provider's) with

- ``POST /rules`` ``{"rules": [...]}``: replace the rules; each is
  ``{"match": {...}, "reply": {...}, "times": N|null}``, checked in order, the first match with
  uses left answers (``times`` null: every time); no match → the fake's default answer.
  ``match`` keys (all optional, all must hold): ``tools`` (bool: the request offers tools),
  ``tool_result`` (bool: the last message carries a tool result), ``model`` (exact name),
  ``contains`` (a substring of the last message's JSON), ``stream`` (bool).
  ``reply`` keys: ``text``, ``tool`` (``{"name", "input"}``), ``thinking`` (Anthropic),
  ``status`` + ``message`` (an HTTP error in the provider's shape), ``model``.
- ``GET /seen``: every request the fake received, ``[{"path", "headers", "body"}]`` (key
  headers left out).

Rules are matched on the request body, so a CLI's side requests (titles, summaries without
tools) do not consume the tool call a test scripted for its agent turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import fake_anthropic as fa
from .base import Reply, Seen
from .fake_ollama import FakeOllama
from .fake_openai import FakeOpenAI

_SECRET_HEADERS = {"authorization", "x-api-key"}


@dataclass
class Rule:
    match: dict[str, Any]
    reply: dict[str, Any]
    times: int | None = 1
    used: int = field(default=0)

    def live(self) -> bool:
        return self.times is None or self.used < self.times


def _has_tool_result(message: Any) -> bool:
    if not isinstance(message, dict):
        return False
    if message.get("role") == "tool":  # OpenAI chat, Ollama
        return True
    content = message.get("content")
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def matches(match: dict[str, Any], body: Any) -> bool:
    """Whether a request ``body`` fits a rule's ``match``."""
    if not isinstance(body, dict):
        return False
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    checks: dict[str, Callable[[Any], bool]] = {
        "tools": lambda want: bool(body.get("tools")) == want,
        "tool_result": lambda want: _has_tool_result(last) == want,
        "model": lambda want: body.get("model") == want,
        "contains": lambda want: want in json.dumps(last),
        "stream": lambda want: bool(body.get("stream")) == want,
    }
    return all(checks[key](want) for key, want in match.items() if key in checks)


class Rules:
    """The rule list one fake answers by."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def set(self, raw: list[dict[str, Any]]) -> None:
        self.rules = [Rule(r.get("match", {}), r["reply"], r.get("times", 1)) for r in raw]

    def pick(self, body: Any) -> dict[str, Any] | None:
        for rule in self.rules:
            if rule.live() and matches(rule.match, body):
                rule.used += 1
                return rule.reply
        return None


def chat_reply(spec: dict[str, Any]) -> Reply:
    """An OpenAI/Ollama :class:`Reply` from a rule's ``reply``."""
    tool = spec.get("tool")
    return Reply(
        text=spec.get("text", "" if tool else "Hello from the fake upstream."),
        tool_calls=[(tool["name"], json.dumps(tool.get("input", {})))] if tool else [],
        finish_reason="tool_calls" if tool else "stop",
        status=spec.get("status"),
        error_message=spec.get("message", "fake upstream error"),
        model=spec.get("model"),
    )


def anthropic_reply(spec: dict[str, Any]) -> fa.Reply:
    """An Anthropic :class:`fa.Reply` from a rule's ``reply``."""
    if spec.get("status"):
        return fa.http_error(spec["status"], spec.get("message"))
    blocks: list[fa.Block] = []
    if spec.get("thinking"):
        blocks.append(fa.Thinking(spec["thinking"]))
    if spec.get("text") or not spec.get("tool"):
        blocks.append(fa.Text(spec.get("text", "Hello from the fake.")))
    if spec.get("tool"):
        blocks.append(fa.ToolUse(spec["tool"]["name"], spec["tool"].get("input", {})))
    return fa.Reply(content=blocks, model=spec.get("model"))


class RuledOpenAI(FakeOpenAI):
    def __init__(self, rules: Rules, model_ids: list[str] | None = None) -> None:
        super().__init__(model_ids)
        self.rules = rules

    def next_reply(self, model: str | None = None) -> Reply:
        spec = self.rules.pick(self.seen[-1].body if self.seen else None)
        return chat_reply(spec) if spec is not None else super().next_reply(model)


class RuledOllama(FakeOllama):
    def __init__(self, rules: Rules, models: list[str] | None = None) -> None:
        super().__init__(models)
        self.rules = rules

    def next_reply(self, model: str | None = None) -> Reply:
        spec = self.rules.pick(self.seen[-1].body if self.seen else None)
        return chat_reply(spec) if spec is not None else super().next_reply(model)


class RuledAnthropic(fa.FakeAnthropic):
    def __init__(self, rules: Rules) -> None:
        super().__init__(accept_bearer=False)
        self.rules = rules

    async def _answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        spec = self.rules.pick(body)
        if spec is not None:
            self._queue.appendleft(anthropic_reply(spec))
        return await super()._answer(request, body)


def seen_rows(fake: FakeOpenAI | FakeOllama | fa.FakeAnthropic) -> list[dict[str, Any]]:
    """What the fake received, without key headers."""
    got: list[Seen] | list[fa.Received] = fake.requests if isinstance(fake, fa.FakeAnthropic) else fake.seen
    return [
        {
            "path": s.path,
            "headers": {k: v for k, v in s.headers.items() if k.lower() not in _SECRET_HEADERS},
            "body": s.body,
        }
        for s in got
    ]


def control_app(rules: Rules, fake: FakeOpenAI | FakeOllama | fa.FakeAnthropic) -> web.Application:
    async def set_rules(request: web.Request) -> web.Response:
        rules.set((await request.json())["rules"])
        return web.json_response({"rules": len(rules.rules)})

    async def seen(request: web.Request) -> web.Response:
        return web.json_response(seen_rows(fake))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/rules", set_rules)
    app.router.add_get("/seen", seen)
    return app
