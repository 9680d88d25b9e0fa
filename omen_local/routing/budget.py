"""Worst-case cost of a request, and the output cap that keeps it inside a budget.

Pure functions: no I/O, no clock. The prompt is estimated offline (``estimate``); the
output is bounded by the request's ``max_tokens``/``max_completion_tokens`` or, when
the client sets none, by ``assumed_output_tokens`` from the config.
"""

from __future__ import annotations

from typing import Any

from ..api.shape import MAX_OUTPUT_TOKENS
from ..config import Price


def requested_output_cap(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) else None


def worst_cost(price: Price, prompt_tokens: int, output_tokens: int) -> float:
    """USD if every prompt token is fresh and the whole output cap is used."""
    return (prompt_tokens * price.input + output_tokens * price.output) / 1_000_000


def affordable_output(price: Price, prompt_tokens: int, budget_usd: float) -> int | None:
    """How many output tokens ``budget_usd`` pays for after the prompt; None if unbounded.

    A free model fits any budget, 0 included; a paid prompt that costs more than the
    budget leaves nothing. The cap never exceeds what a request may ask for.
    """
    left = budget_usd - prompt_tokens * price.input / 1_000_000
    if price.output <= 0:
        return None if left >= 0 else 0
    if left <= 0:
        return 0
    return min(int(left * 1_000_000 / price.output), MAX_OUTPUT_TOKENS)


def with_output_cap(body: dict[str, Any], cap: int) -> dict[str, Any]:
    """A copy of ``body`` whose output limit is at most ``cap`` (in the field the client used)."""
    out = dict(body)
    field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    current = requested_output_cap(body)
    out[field] = cap if current is None else min(current, cap)
    return out
