"""Routing hints: what a client may suggest, validated field by field.

Three ways in, one meaning: a model alias (``auto-code``: a named set of hints), the
``x-omen-*`` headers (for clients that can set headers but not body fields), and the
``omen`` object in the body. Each field is taken from the most specific source that
sets it: body over headers over alias. Clients hint, OMEN decides: none of these names a
final model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ..config import STRATEGIES, Alias, StrategyName
from ..errors import invalid
from .shape import is_int

STICKINESS = ("none", "session")
_FIELDS = (
    "strategy",
    "k",
    "intent",
    "providers",
    "budget_usd",
    "max_latency_ms",
    "stickiness",
    "session",
    "workspace",
)
MAX_BUDGET_USD = 1_000_000.0  # more than any request can cost; keeps the budget arithmetic finite
MAX_LATENCY_MS = 3_600_000

# Header -> hint field; the header's value is text, converted to the field's type.
HEADERS = {
    "x-omen-strategy": "strategy",
    "x-omen-k": "k",
    "x-omen-intent": "intent",
    "x-omen-providers": "providers",
    "x-omen-budget-usd": "budget_usd",
    "x-omen-max-latency-ms": "max_latency_ms",
    "x-omen-stickiness": "stickiness",
    "x-omen-session": "session",
    "x-omen-workspace": "workspace",
}


@dataclass(frozen=True, slots=True)
class Hints:
    strategy: StrategyName | None = None
    k: int | None = None
    intent: str | None = None
    providers: tuple[str, ...] | None = None
    budget_usd: float | None = None
    max_latency_ms: int | None = None
    stickiness: str | None = None
    session: str | None = None
    workspace: str | None = None
    local_only: bool = False  # from an alias: local providers only


NO_HINTS = Hints()



def _body_name(key: str) -> str:
    return f"omen.{key}"


def _header_name(key: str) -> str:
    return next(h for h, f in HEADERS.items() if f == key)


def _short_str(raw: dict[str, Any], key: str, name: str, limit: int = 200) -> str | None:
    v = raw.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > limit or not v.isprintable():
        raise invalid(f"{name} must be a non-empty string of at most {limit} printable characters", name)
    return v


def parse_hints(
    raw: Any,
    *,
    intents: tuple[str, ...] | list[str],
    providers: tuple[str, ...] | list[str],
    from_headers: bool = False,
) -> Hints:
    """Validate the hints against the configured intents and providers; a 400 names the field
    as the client wrote it (``omen.k``, or the ``x-omen-k`` header)."""
    if raw is None:
        return NO_HINTS
    name = _header_name if from_headers else _body_name
    if not isinstance(raw, dict):
        raise invalid("omen must be an object", "omen")
    for key in raw:
        if key not in _FIELDS:
            raise invalid(f"unknown hint omen.{key} (known: {', '.join(_FIELDS)})", f"omen.{key}")

    strategy = raw.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise invalid(f"{name('strategy')} must be one of {', '.join(STRATEGIES)}", name("strategy"))

    k = raw.get("k")
    if k is not None and (not is_int(k) or not 1 <= k <= 8):
        raise invalid(f"{name('k')} must be an integer from 1 to 8", name("k"))

    intent = raw.get("intent")
    if intent is not None and intent not in intents:
        raise invalid(f"{name('intent')} must be one of {', '.join(intents)}", name("intent"))

    allow = raw.get("providers")
    allow_t: tuple[str, ...] | None = None
    if allow is not None:
        if not isinstance(allow, list) or not allow or not all(isinstance(p, str) for p in allow):
            raise invalid(f"{name('providers')} must be a non-empty list of provider names", name("providers"))
        unknown = [p for p in allow if p not in providers]
        if unknown:
            raise invalid(
                f"{name('providers')} names unknown provider {unknown[0][:100]!r} (configured: {', '.join(providers)})",
                name("providers"),
            )
        allow_t = tuple(dict.fromkeys(allow))

    budget = raw.get("budget_usd")
    if budget is not None and (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not math.isfinite(budget)
        or not 0 <= budget <= MAX_BUDGET_USD
    ):
        raise invalid(f"{name('budget_usd')} must be a number from 0 to {MAX_BUDGET_USD:g}", name("budget_usd"))

    latency = raw.get("max_latency_ms")
    if latency is not None and (not is_int(latency) or not 1 <= latency <= MAX_LATENCY_MS):
        raise invalid(f"{name('max_latency_ms')} must be an integer from 1 to {MAX_LATENCY_MS}", name("max_latency_ms"))

    stick = raw.get("stickiness")
    if stick is not None and stick not in STICKINESS:
        raise invalid(f"{name('stickiness')} must be one of {', '.join(STICKINESS)}", name("stickiness"))

    return Hints(
        strategy=None if strategy is None else StrategyName(strategy),
        k=k,
        intent=intent,
        providers=allow_t,
        budget_usd=None if budget is None else float(budget),
        max_latency_ms=latency,
        stickiness=stick,
        session=_short_str(raw, "session", name("session")),
        workspace=_short_str(raw, "workspace", name("workspace")),
    )


def _header_value(field: str, text: str) -> Any:
    """A header's text as the hint's type; text that does not convert stays text, so the
    hint's own check rejects it with the usual message."""
    text = text.strip()
    if field in ("k", "max_latency_ms"):
        try:
            return int(text)
        except ValueError:
            return text
    if field == "budget_usd":
        try:
            return float(text)
        except ValueError:
            return text
    if field == "providers":
        return [p.strip() for p in text.split(",") if p.strip()] or text
    return text


def header_hints(headers: Mapping[str, str], *, intents: tuple[str, ...], providers: tuple[str, ...]) -> Hints:
    """The hints given as ``x-omen-*`` headers (validated like the body's)."""
    raw = None
    for h, field in HEADERS.items():
        value = headers.get(h)
        if value is not None:
            if raw is None:
                raw = {}
            raw[field] = _header_value(field, value)
    return parse_hints(raw, intents=intents, providers=providers, from_headers=True) if raw else NO_HINTS


def alias_hints(alias: Alias) -> Hints:
    return Hints(
        strategy=alias.strategy,
        k=alias.k,
        intent=alias.intent,
        providers=alias.providers,
        budget_usd=alias.budget_usd,
        max_latency_ms=alias.max_latency_ms,
        local_only=alias.local_only,
    )


def combine(*layers: Hints) -> Hints:
    """Field by field, the last layer that sets a field wins (pass alias, headers, body)."""
    out = NO_HINTS
    for layer in layers:
        if layer is NO_HINTS:
            continue
        values = {f.name: getattr(layer, f.name) for f in fields(Hints)}
        out = replace(out, **{k: v for k, v in values.items() if v is not None and v is not False})
    return out
