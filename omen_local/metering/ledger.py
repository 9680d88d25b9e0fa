"""The quota ledger: spend per user and per workspace in the current UTC day and month.

Admission reserves the request's worst case (CostBound) against every limit of its
scopes; the request's end releases the reservation and charges what it really cost. The
check and the reservation happen together with no ``await`` in between, so on one event
loop concurrent requests cannot both take the last of a quota: what is spent can only
exceed a limit when a request costs more than its own worst case (a prompt estimate too
low). Windows are UTC days and months; a reservation still open when a window rolls
over counts against the new one, where it will be charged.

The in-process ledger is the embedded default; a team deployment can put the same
protocol on Redis or PostgreSQL (``reserve`` is async for that reason).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import rollup as r

Scope = tuple[str, str]  # ("user", name) | ("workspace", name)
QUOTA_KEYS = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")
_EPS = 1e-12


class QuotaExceeded(Exception):
    """A reservation would break ``key`` of ``scope``; the numbers say by how much."""

    def __init__(self, scope: Scope, key: str, limit: float, used: float, held: float, need: float, resets_at: float) -> None:
        super().__init__(f"{scope[0]} {scope[1]}: {key}")
        self.scope, self.key, self.limit, self.used, self.held, self.need = scope, key, limit, used, held, need
        self.resets_at = resets_at


class QuotaLedger(Protocol):
    async def reserve(
        self, key: str, scopes: Sequence[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        """Hold ``usd``/``tokens`` for request ``key`` in every scope, or raise QuotaExceeded (holding nothing).

        ``scopes`` pairs each scope with its finite limits (QUOTA_KEYS -> value); scopes
        without limits are still tracked, so a quota added later starts from the truth.
        """

    def settle(self, key: str, usd: float, tokens: int) -> None:
        """Drop request ``key``'s hold and charge what it cost."""

    def used(self, scope: Scope) -> tuple[float, float, float, float]:
        """(daily_usd, monthly_usd, daily_tokens, monthly_tokens) spent, without holds."""


@dataclass(slots=True)
class Tally:
    day: int = 0
    month: int = 0
    day_usd: float = 0.0
    day_tokens: float = 0.0
    month_usd: float = 0.0
    month_tokens: float = 0.0
    held_usd: float = 0.0
    held_tokens: float = 0.0


@dataclass(slots=True)
class Hold:
    scopes: list[Tally] = field(default_factory=list)
    usd: float = 0.0
    tokens: float = 0.0


def month_index(t: float) -> int:
    day = time.gmtime(t)
    return day.tm_year * 12 + day.tm_mon - 1


class LocalLedger:
    """In-process, for one OMEN server; loaded from the usage store at start."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tallies: dict[Scope, Tally] = {}
        self._holds: dict[str, Hold] = {}

    def _tally(self, scope: Scope, now: float) -> Tally:
        t = self._tallies.get(scope)
        if t is None:
            t = self._tallies[scope] = Tally(day=int(now // r.DAY), month=month_index(now))
        else:
            self._roll(t, now)
        return t

    @staticmethod
    def _roll(t: Tally, now: float) -> None:
        day = int(now // r.DAY)
        if day != t.day:
            t.day, t.day_usd, t.day_tokens = day, 0.0, 0.0
            month = month_index(now)
            if month != t.month:
                t.month, t.month_usd, t.month_tokens = month, 0.0, 0.0

    def load(self, rows: Sequence[tuple[str, str, int, float, int]]) -> None:
        """Start from the store's per-day spend ((kind, name, day, usd, tokens) rows, this month's)."""
        now = self.clock()
        today, month = int(now // r.DAY), month_index(now)
        for kind, name, day, usd, tokens in rows:
            if month_index(day * r.DAY) != month:
                continue
            t = self._tally((kind, name), now)
            t.month_usd += usd
            t.month_tokens += tokens
            if day == today:
                t.day_usd += usd
                t.day_tokens += tokens

    async def reserve(
        self, key: str, scopes: Sequence[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        now = self.clock()
        tallies = []
        for scope, limits in scopes:
            t = self._tally(scope, now)
            for name, limit in limits.items():
                daily = name.startswith("daily")
                if name.endswith("usd"):
                    used, held, need = (t.day_usd if daily else t.month_usd), t.held_usd, usd
                else:
                    used, held, need = (t.day_tokens if daily else t.month_tokens), t.held_tokens, tokens
                if used + held + need > limit + _EPS:
                    resets = (math.floor(now / r.DAY) + 1) * r.DAY if daily else r.next_month_start(now)
                    raise QuotaExceeded(scope, name, limit, used, held, need, resets)
            tallies.append(t)
        for t in tallies:
            t.held_usd += usd
            t.held_tokens += tokens
        self._holds[key] = Hold(tallies, usd, tokens)

    def settle(self, key: str, usd: float, tokens: int) -> None:
        hold = self._holds.pop(key, None)
        if hold is None:
            return
        now = self.clock()
        for t in hold.scopes:
            self._roll(t, now)
            t.held_usd = max(0.0, t.held_usd - hold.usd)
            t.held_tokens = max(0.0, t.held_tokens - hold.tokens)
            t.day_usd += usd
            t.month_usd += usd
            t.day_tokens += tokens
            t.month_tokens += tokens

    def used(self, scope: Scope) -> tuple[float, float, float, float]:
        t = self._tally(scope, self.clock())
        return t.day_usd, t.month_usd, t.day_tokens, t.month_tokens

    def held(self, scope: Scope) -> tuple[float, float]:
        t = self._tally(scope, self.clock())
        return t.held_usd, t.held_tokens
