"""Which limits apply to whom: config defaults, per-name entries, and quotas set from the CLI.

Per key, the most specific value wins: ``omen quota set`` (``quotas.json`` in the data
dir) over ``[quotas.users.NAME]`` over ``[quotas.default_user]`` (same for workspaces).
"none" (inf) means no limit, even over a default. A running server looks at
``quotas.json`` at most every ``REFRESH_S`` (one ``stat``), so a quota set from the CLI
applies within that delay, without a ``stat`` on every request.

Caches hold the named scopes only (config and quotas.json): every other name gets its
kind's defaults, shared, so names clients invent add no state here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from .. import jsonutil
from ..config import UNLIMITED, LimitConfig, QuotaConfig
from ..filestamp import WatchedFile
from ..secrets import write_private
from .ledger import QUOTA_KEYS, Scope

QUOTAS_FILE = "quotas.json"
SCOPE_KINDS = ("user", "workspace")
REFRESH_S = 0.25  # the longest a quota set from another process waits before it applies

Effective = dict[str, tuple[float, str]]  # key -> (finite limit, where it was set)


def _layer(into: Effective, values: Any, where: str) -> None:
    for f in fields(values):
        value = getattr(values, f.name)
        if value is not None:
            into[f.name] = (value, f"{where}.{f.name}")


def _finite(eff: Effective) -> Effective:
    return {k: v for k, v in eff.items() if not math.isinf(v[0])}


# ---------------------------------------------------------------- quotas.json (the CLI's)


def read_quota_file(path: Path) -> dict[str, dict[str, dict[str, float | None]]]:
    """{"user": {name: {key: value or None (= no limit)}}, "workspace": {...}}."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = None
    return parse_quota_file(raw)


def parse_quota_file(raw: bytes | None) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {"user": {}, "workspace": {}}
    if raw is None:
        return out
    data = jsonutil.loads(raw)
    if isinstance(data, dict):
        for kind in SCOPE_KINDS:
            for name, entry in (data.get(kind) or {}).items():
                if isinstance(entry, dict):
                    out[kind][name] = {
                        k: (None if v is None else float(v))
                        for k, v in entry.items()
                        if k in QUOTA_KEYS and (v is None or isinstance(v, int | float))
                    }
    return out


def set_quota(path: Path, kind: str, name: str, values: dict[str, float | None]) -> dict[str, float | None]:
    """Merge ``values`` into the entry for (kind, name); None stores "no limit". Returns the entry."""
    data = read_quota_file(path)
    entry = data[kind].setdefault(name, {})
    entry.update(values)
    write_private(path, jsonutil.dumps(data))
    return entry


def clear_quota(path: Path, kind: str, name: str) -> bool:
    data = read_quota_file(path)
    found = data[kind].pop(name, None) is not None
    if found:
        write_private(path, jsonutil.dumps(data))
    return found


class QuotaBook:
    """Effective quotas per scope, cached until the config or quotas.json changes."""

    def __init__(self, config: QuotaConfig, data_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.file = data_dir / QUOTAS_FILE
        self.clock = clock
        self._watch = WatchedFile(self.file)
        self._next_check = float("-inf")
        self._cli: dict[str, dict[str, dict[str, float | None]]] = {"user": {}, "workspace": {}}
        self._cache: dict[Scope, Effective] = {}
        self._finite_cache: dict[Scope, dict[str, float]] = {}
        self._defaults: dict[str, Effective] = {}
        self._finite_defaults: dict[str, dict[str, float]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read quotas.json if it changed; looks (one stat) at most every REFRESH_S."""
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + REFRESH_S
        stamp = self._watch.changed()
        if stamp is not None:
            self._cli = parse_quota_file(self._watch.read(stamp))
            self._cache.clear()
            self._finite_cache.clear()

    def _named(self, kind: str, name: str) -> bool:
        return name in (self.config.users if kind == "user" else self.config.workspaces) or name in self._cli[kind]

    def _defaults_of(self, kind: str) -> Effective:
        found = self._defaults.get(kind)
        if found is None:
            c = self.config
            found = {}
            _layer(found, c.default_user if kind == "user" else c.default_workspace, f"quotas.default_{kind}")
            self._defaults[kind] = found
        return found

    def effective(self, scope: Scope) -> Effective:
        """Every limit that applies, finite or not, with where it was set."""
        cached = self._cache.get(scope)
        if cached is not None:
            return cached
        kind, name = scope
        if not self._named(kind, name):
            return self._defaults_of(kind)
        c = self.config
        named, section = (c.users, "users") if kind == "user" else (c.workspaces, "workspaces")
        eff = dict(self._defaults_of(kind))
        if name in named:
            _layer(eff, named[name], f"quotas.{section}.{name}")
        for key, value in self._cli[kind].get(name, {}).items():
            eff[key] = (UNLIMITED if value is None else value, f"omen quota set --{kind} {name}")
        self._cache[scope] = eff
        return eff

    def limits(self, scope: Scope) -> dict[str, float]:
        """The finite limits of ``scope`` (what the ledger checks); cached, do not modify."""
        found = self._finite_cache.get(scope)
        if found is not None:
            return found
        kind, name = scope
        if not self._named(kind, name):
            found = self._finite_defaults.get(kind)
            if found is None:
                found = self._finite_defaults[kind] = {k: v for k, (v, _) in _finite(self._defaults_of(kind)).items()}
            return found
        found = self._finite_cache[scope] = {k: v for k, (v, _) in _finite(self.effective(scope)).items()}
        return found

    def configured(self) -> list[tuple[Scope, Effective]]:
        """Scopes named in the config or quotas.json (for `omen quota list`)."""
        c = self.config
        scopes: dict[Scope, None] = {}
        for name in c.users:
            scopes[("user", name)] = None
        for name in c.workspaces:
            scopes[("workspace", name)] = None
        for kind in SCOPE_KINDS:
            for name in self._cli[kind]:
                scopes[(kind, name)] = None
        return [(s, self.effective(s)) for s in scopes]


class LimitBook:
    """Effective rate limits per user, workspace and provider (config only)."""

    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self._cache: dict[Scope, Effective] = {}
        self._finite_cache: dict[Scope, dict[str, float]] = {}
        self._defaults: dict[str, Effective] = {}  # per kind, for every unnamed user or workspace
        self._finite_defaults: dict[str, dict[str, float]] = {}

    def _compute(self, kind: str, name: str | None) -> Effective:
        c = self.config
        eff: Effective = {}
        if kind == "provider":
            if name in c.providers:
                _layer(eff, c.providers[name], f"limits.providers.{name}")
        else:
            default, named, section = (
                (c.default_user, c.users, "users") if kind == "user" else (c.default_workspace, c.workspaces, "workspaces")
            )
            _layer(eff, default, f"limits.default_{kind}")
            if name is not None and name in named:
                _layer(eff, named[name], f"limits.{section}.{name}")
        return _finite(eff)

    def effective(self, scope: Scope) -> Effective:
        cached = self._cache.get(scope)
        if cached is not None:
            return cached
        kind, name = scope
        c = self.config
        if name not in (c.providers if kind == "provider" else c.users if kind == "user" else c.workspaces):
            found = self._defaults.get(kind)
            if found is None:
                found = self._defaults[kind] = self._compute(kind, None)
            return found
        eff = self._cache[scope] = self._compute(kind, name)
        return eff

    def limits(self, scope: Scope) -> dict[str, float]:
        """Cached; do not modify."""
        found = self._finite_cache.get(scope)
        if found is not None:
            return found
        eff = self.effective(scope)
        if scope in self._cache:
            found = self._finite_cache[scope] = {k: v for k, (v, _) in eff.items()}
            return found
        kind = scope[0]  # an unnamed scope: its kind's defaults
        found = self._finite_defaults.get(kind)
        if found is None:
            found = self._finite_defaults[kind] = {k: v for k, (v, _) in eff.items()}
        return found
