"""Model names clients insist on: Claude Code asks for ``claude-opus-*``, Codex for
``gpt-5*-codex``, editors for their own defaults, and most cannot be told otherwise.

A name some usable provider serves is routed there as asked. Any other name that matches
an ``[aliases]`` pattern (``"claude-*" = "auto-code"``) routes as the alias (or
``provider/model``) it maps to; the answer says so (``x-omen-asked-model`` beside
``x-omen-model``, the request log keeps both). Patterns are shell globs, the most literal
characters first (config.py sorts them), so ``claude-haiku-*`` wins over ``claude-*``.

A mapped name never buys a pricier model than the one asked for: when OMEN knows the asked
model's price (``[pricing]``, shipped ``resources/pricing.toml``, a dated name priced as its
undated one), the planner keeps only candidates whose input and output rates are both at
most the asked model's, and refuses the request when none is (docs/api.md, "Model names
clients insist on"). A name whose price OMEN does not know is not capped, and says so
(``x-omen-price-cap: unknown``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase

from ..config import Config, Price

# A release date a provider appends to a model's name: claude-haiku-4-5-20251001, gpt-4o-2024-08-06.
_DATED = re.compile(r"^(?P<base>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


def mapped_name(name: str, config: Config, served: Callable[[str], bool]) -> str | None:
    """What ``name`` routes as, or None when it stays as it is (served, an alias, or unmatched)."""
    if name == "auto" or "/" in name or name in config.aliases or not config.model_map:
        return None
    if served(name):
        return None
    for pattern, target in config.model_map:
        if fnmatchcase(name, pattern):
            return target
    return None


def describe(config: Config) -> list[str]:
    """The mappings as ``omen doctor`` shows them, one per line, in the order they are tried."""
    return [f"{pattern} -> {target}" for pattern, target in config.model_map]


def asked_price(pricing: Mapping[str, Price], name: str) -> Price | None:
    """The price of the model a client asked for, when OMEN knows it: its own entry, else its
    undated name's (``claude-haiku-4-5-20251001`` is ``claude-haiku-4-5``). None: unknown
    (no family guess: a newer model of a family may cost less or more than an older one)."""
    price = pricing.get(name)
    if price is None:
        dated = _DATED.match(name)
        price = pricing.get(dated["base"]) if dated else None
    return price


def within(price: Price, cap: Price) -> bool:
    """Not pricier than ``cap``: neither the input nor the output rate above it."""
    return price.input <= cap.input and price.output <= cap.output


def cap_header(cap: Price | None) -> str:
    """``x-omen-price-cap``: the USD per million input/output tokens a mapped request was held
    to, or ``unknown`` when the asked model's price is not known (no cap applied)."""
    return "unknown" if cap is None else f"input={cap.input:g};output={cap.output:g}"
