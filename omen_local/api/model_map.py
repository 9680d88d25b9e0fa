"""Model names clients insist on: Claude Code asks for ``claude-opus-*``, Codex for
``gpt-5*-codex``, editors for their own defaults, and most cannot be told otherwise.

A name some usable provider serves is routed there as asked. Any other name that matches
an ``[aliases]`` pattern (``"claude-*" = "auto-code"``) routes as the alias (or
``provider/model``) it maps to; the answer says so (``x-omen-asked-model`` beside
``x-omen-model``, the request log keeps both). Patterns are shell globs, the most literal
characters first (config.py sorts them), so ``claude-haiku-*`` wins over ``claude-*``.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

from ..config import Config


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
