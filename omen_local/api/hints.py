"""The ``omen`` hints object: what a client may suggest, validated field by field.

Clients hint, OMEN decides: none of these names a final model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import STRATEGIES
from ..errors import invalid

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


@dataclass(frozen=True, slots=True)
class Hints:
    strategy: str | None = None
    k: int | None = None
    intent: str | None = None
    providers: tuple[str, ...] | None = None
    budget_usd: float | None = None
    max_latency_ms: int | None = None
    stickiness: str | None = None
    session: str | None = None
    workspace: str | None = None


NO_HINTS = Hints()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short_str(raw: dict[str, Any], key: str, limit: int = 200) -> str | None:
    v = raw.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > limit:
        raise invalid(f"omen.{key} must be a non-empty string of at most {limit} characters", f"omen.{key}")
    return v


def parse_hints(raw: Any, *, intents: tuple[str, ...] | list[str], providers: tuple[str, ...] | list[str]) -> Hints:
    """Validate the hints against the configured intents and providers; 400 names the field."""
    if raw is None:
        return NO_HINTS
    if not isinstance(raw, dict):
        raise invalid("omen must be an object", "omen")
    for key in raw:
        if key not in _FIELDS:
            raise invalid(f"unknown hint omen.{key} (known: {', '.join(_FIELDS)})", f"omen.{key}")

    strategy = raw.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise invalid(f"omen.strategy must be one of {', '.join(STRATEGIES)}", "omen.strategy")

    k = raw.get("k")
    if k is not None and (not _is_int(k) or not 1 <= k <= 8):
        raise invalid("omen.k must be an integer from 1 to 8", "omen.k")

    intent = raw.get("intent")
    if intent is not None and intent not in intents:
        raise invalid(f"omen.intent must be one of {', '.join(intents)}", "omen.intent")

    allow = raw.get("providers")
    allow_t: tuple[str, ...] | None = None
    if allow is not None:
        if not isinstance(allow, list) or not allow or not all(isinstance(p, str) for p in allow):
            raise invalid("omen.providers must be a non-empty list of provider names", "omen.providers")
        unknown = [p for p in allow if p not in providers]
        if unknown:
            raise invalid(
                f"omen.providers names unknown provider {unknown[0]!r} (configured: {', '.join(providers)})",
                "omen.providers",
            )
        allow_t = tuple(allow)

    budget = raw.get("budget_usd")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0):
        raise invalid("omen.budget_usd must be a number >= 0", "omen.budget_usd")

    latency = raw.get("max_latency_ms")
    if latency is not None and (not _is_int(latency) or latency < 1):
        raise invalid("omen.max_latency_ms must be a positive integer", "omen.max_latency_ms")

    stick = raw.get("stickiness")
    if stick is not None and stick not in STICKINESS:
        raise invalid(f"omen.stickiness must be one of {', '.join(STICKINESS)}", "omen.stickiness")

    return Hints(
        strategy=strategy,
        k=k,
        intent=intent,
        providers=allow_t,
        budget_usd=None if budget is None else float(budget),
        max_latency_ms=latency,
        stickiness=stick,
        session=_short_str(raw, "session"),
        workspace=_short_str(raw, "workspace"),
    )
