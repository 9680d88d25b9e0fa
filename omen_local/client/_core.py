"""Pure steps shared by the sync and async clients: what to send where, how to read the
answer's headers, which local model stands in, and what the degraded banner says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .answer import Route
from .discovery import Local, Target
from .hints import Hints

USER_AGENT = f"omen-client/{__version__}"


@dataclass(frozen=True, slots=True)
class Call:
    """One chat request as the caller asked for it."""

    messages: Sequence[Mapping[str, Any]]
    model: str = "auto"
    hints: Hints = field(default_factory=Hints)
    tools: Sequence[Mapping[str, Any]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # other OpenAI fields (temperature, ...)


@dataclass(frozen=True, slots=True)
class Outgoing:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def _body(call: Call, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {**call.extra, "model": model, "messages": [dict(m) for m in call.messages],
                            "stream": True, "stream_options": {"include_usage": True}}
    if call.tools:
        body["tools"] = [dict(t) for t in call.tools]
    return body


def to_omen(target: Target, call: Call, user_agent: str) -> Outgoing:
    assert target.url is not None
    body = _body(call, call.model)
    omen = call.hints.to_omen()
    if omen:
        body["omen"] = omen
    headers = {"User-Agent": user_agent, "Accept": "text/event-stream"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    return Outgoing(f"{target.url}/v1/chat/completions", headers, body)


def to_ollama(local: Local, call: Call, model: str, user_agent: str) -> Outgoing:
    """Ollama's OpenAI-compatible endpoint: the same wire format as OMEN's, no key (never a
    cloud key: those stay with OMEN), no hints."""
    return Outgoing(f"{local.ollama_url}/v1/chat/completions",
                    {"User-Agent": user_agent, "Accept": "text/event-stream"}, _body(call, model))


def route_from_headers(headers: Mapping[str, str]) -> Route:
    return Route(
        provider=headers.get("x-omen-provider"),
        model=headers.get("x-omen-model"),
        strategy=headers.get("x-omen-strategy"),
        request_id=headers.get("x-omen-request-id"),
        intent=headers.get("x-omen-intent"),
        alias=headers.get("x-omen-alias"),
    )


def effective_hints(call: Call, local: Local) -> Hints:
    """The call's hints over its alias's (the request's own hints win, as in OMEN)."""
    alias = local.aliases.get(call.model)
    return alias.merged(call.hints) if alias is not None else call.hints


def allows_local(hints: Hints, local: Local) -> bool:
    return hints.providers is None or any(p in local.local_providers for p in hints.providers)


def choose_local_model(call: Call, available: Sequence[str], local: Local, preferred: str | None = None,
                       intent: str | None = None) -> str | None:
    """The local model that answers for ``call.model`` while OMEN is down."""

    def find(name: str) -> str | None:
        for cand in (name, f"{name}:latest"):
            if cand in available:
                return cand
        return None

    provider, sep, rest = call.model.partition("/")
    if sep and provider in local.local_providers:
        return find(rest) or rest  # named on purpose: Ollama says so if it is missing
    if not sep and (hit := find(call.model)):
        return hit
    if preferred and (hit := find(preferred)):
        return hit
    if not available:
        return None
    if (intent or call.hints.intent) == "code":
        coder = [m for m in available if "code" in m.lower()]
        if coder:
            return coder[0]
    return available[0]


def banner(reason: str, ollama_url: str, model: str) -> str:
    """One line for a client to show while degraded; ``reason`` says what happened to OMEN."""
    return (f"degraded mode: {reason}; answering with local Ollama ({model} at {ollama_url}) only, "
            "unmetered; cloud models, strategies and budgets return when OMEN is back")


def unreachable(url: str, exc: BaseException, connect_timeout_s: float) -> str:
    if "timeout" in type(exc).__name__.lower():
        return f"OMEN at {url} did not answer within {connect_timeout_s:g} s"
    return f"OMEN at {url} is unreachable ({exc or type(exc).__name__})"


def cost_from_events(body: Any) -> float | None:
    events = body.get("data") if isinstance(body, dict) else None
    if not isinstance(events, list) or not events:
        return None
    return float(sum(e.get("cost_usd") or 0.0 for e in events if isinstance(e, dict)))


def model_ids(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m["id"]) for m in data or () if isinstance(m, dict) and "id" in m]
