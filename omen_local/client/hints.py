"""Typed hints: the ``omen`` object a client sends next to the OpenAI fields.

Clients hint, OMEN decides: the server validates every field and answers a bad value with
a 400 naming it (``omen.k``), so nothing is checked twice here. While OMEN is down, the kit
reports which hints it could not honour (:func:`unhonoured`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

# Aliases OMEN lists in /v1/models that a local model alone still honours.
LOCAL_ALIASES = ("auto", "auto-local")


@dataclass(frozen=True, slots=True)
class Hints:
    """Mirrors the ``omen`` request object (docs/api.md); None means "not set"."""

    strategy: str | None = None  # single | race | speculate_k | parallel_merge
    k: int | None = None
    intent: str | None = None
    providers: tuple[str, ...] | None = None
    budget_usd: float | None = None
    max_latency_ms: int | None = None
    stickiness: str | None = None  # none | session
    session: str | None = None
    workspace: str | None = None

    def to_omen(self) -> dict[str, Any]:
        """The JSON ``omen`` object: only the fields that are set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def merged(self, over: Hints | None) -> Hints:
        """These hints with every field ``over`` sets replacing ours."""
        if over is None:
            return self
        return Hints(**{f.name: getattr(over, f.name) if getattr(over, f.name) is not None else getattr(self, f.name)
                        for f in fields(self)})


@dataclass(frozen=True, slots=True)
class Unhonoured:
    """A hint the degraded path could not honour, and why."""

    hint: str
    reason: str

    def __str__(self) -> str:
        return f"{self.hint}: {self.reason}"


def unhonoured(hints: Hints, requested_model: str, local_model: str, local_providers: Iterable[str], *,
               alias: bool = False) -> list[Unhonoured]:
    """What a direct local answer (OMEN down) leaves out of what the caller asked for.

    ``hints`` are the effective ones (an alias's, under the caller's); with ``alias`` the
    model name is a known alias, whose hints are then reported one by one."""
    local = set(local_providers)
    out: list[Unhonoured] = []
    provider, _, name = requested_model.partition("/")
    is_local_name = requested_model in (local_model, local_model.removesuffix(":latest")) or (
        provider in local and name in (local_model, local_model.removesuffix(":latest")))
    if requested_model not in LOCAL_ALIASES and not is_local_name and not alias:
        if requested_model.startswith("auto"):
            why = f"an alias this client does not know; the local model {local_model} answered"
        else:
            why = f"needs OMEN (cloud models and their keys stay with it); the local model {local_model} answered"
        out.append(Unhonoured("model " + requested_model, why))
    if hints.strategy not in (None, "single"):
        out.append(Unhonoured("strategy", f"{hints.strategy} needs OMEN; one local model answered"))
    if hints.k is not None:
        out.append(Unhonoured("k", "no fan-out without OMEN"))
    if hints.intent is not None:
        out.append(Unhonoured("intent", f"OMEN's {hints.intent!r} bucket is unavailable; {local_model} was picked locally"))
    if hints.providers is not None:
        cloud = [p for p in hints.providers if p not in local]
        if cloud:
            out.append(Unhonoured("providers", f"{', '.join(cloud)} need OMEN (their keys stay with it)"))
    if hints.budget_usd is not None:
        out.append(Unhonoured("budget_usd", "not metered or enforced without OMEN (local answers cost nothing)"))
    if hints.max_latency_ms is not None:
        out.append(Unhonoured("max_latency_ms", "no deadline is enforced without OMEN"))
    if hints.stickiness not in (None, "none"):
        out.append(Unhonoured("stickiness", "sessions are not kept without OMEN"))
    for name_ in ("session", "workspace"):
        if getattr(hints, name_) is not None:
            out.append(Unhonoured(name_, "usage is not recorded without OMEN"))
    return out
