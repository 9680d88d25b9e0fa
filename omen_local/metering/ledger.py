"""The quota ledger: spend per user and per workspace in the current UTC day and month.

Admission reserves the request's worst case (CostBound) against every limit of its
scopes; the request's end releases the reservation and charges what it really cost. The
check and the reservation happen together with no ``await`` in between, so on one event
loop concurrent requests cannot both take the last of a quota: what is spent can only
exceed a limit when a request costs more than its own worst case (a prompt estimate too
low). Windows are UTC days and months; a reservation still open when a window rolls
over counts against the new one, where it will be charged.

State stays bounded whatever names clients invent. With a :class:`SpendSource` (the
usage store; what :class:`~omen_local.metering.Metering` passes), a scope gets a tally
only when a limit applies to it, loaded from the store (this month's spend) at its first
admission; a tally with no reservation open and whose last charge the store has
committed is dropped when untouched for ``idle_s`` or when there are more than
``max_tallies`` (least recently used first), and loaded again when needed. Without a
source (the CLI, unit tests) every scope is tracked and nothing is dropped.

The in-process ledger is the embedded default; a team deployment can put the same
protocol on Redis or PostgreSQL (``reserve`` is async for that reason).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import rollup as r

Scope = tuple[str, str]  # ("user", name) | ("workspace", name)
QUOTA_KEYS = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")
_EPS = 1e-12
CLEAN = object()  # a tally's mark when the store holds all it knows (just loaded)
IDLE_S = 600.0  # a tally untouched this long (and committed) may be dropped
MAX_TALLIES = 10_000  # beyond this, the least recently used (committed, no hold) are dropped too
SWEEP_MAX = 64  # tallies looked at per admission, so that a sweep never stalls the loop


class QuotaExceeded(Exception):
    """A reservation would break ``key`` of ``scope``; the numbers say by how much."""

    def __init__(self, scope: Scope, key: str, limit: float, used: float, held: float, need: float, resets_at: float) -> None:
        super().__init__(f"{scope[0]} {scope[1]}: {key}")
        self.scope, self.key, self.limit, self.used, self.held, self.need = scope, key, limit, used, held, need
        self.resets_at = resets_at


class SpendUnavailable(Exception):
    """The spend of ``scope`` could not be read (the usage store is failing): its quota cannot be checked."""

    def __init__(self, scope: Scope, reason: str) -> None:
        super().__init__(f"{scope[0]} {scope[1]}: {reason}")
        self.scope, self.reason = scope, reason


class AllowanceSpent(Exception):
    """The team's quota store is unreachable and this instance's share of ``key`` of ``scope``
    (a fraction of what remained of it when last seen) is spent: refused until the store answers."""

    def __init__(self, scope: Scope, key: str, allowance: float, used: float, need: float, share: float,
                 since: str) -> None:
        super().__init__(f"{scope[0]} {scope[1]}: {key} (allowance)")
        self.scope, self.key, self.allowance, self.used, self.need = scope, key, allowance, used, need
        self.share, self.since = share, since


class SpendSource(Protocol):
    """Where a ledger reloads a scope's spend from, and how it knows a charge is safe there."""

    def position(self) -> Any:
        """A mark covering every usage record emitted so far."""

    def durable(self, position: Any) -> bool:
        """Whether every record up to ``position`` is committed (so the store's spend includes it)."""

    async def load(self, scope: Scope, since_day: int) -> Sequence[tuple[int, float, int]]:
        """(day, usd, tokens) spent by ``scope`` per UTC day since ``since_day``, everything emitted so far included."""


class QuotaLedger(Protocol):
    async def reserve(
        self, key: str, scopes: Sequence[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        """Hold ``usd``/``tokens`` for request ``key`` in every scope, or raise QuotaExceeded (holding nothing).

        ``scopes`` pairs each scope with its finite limits (QUOTA_KEYS -> value). A scope
        without limits needs no state; a quota added later starts from the store's truth.
        Raises SpendUnavailable if a scope's spend cannot be loaded.
        """

    def settle(self, key: str, usd: float, tokens: int) -> None:
        """Drop request ``key``'s hold and charge what it cost."""

    def used(self, scope: Scope) -> tuple[float, float, float, float]:
        """(daily_usd, monthly_usd, daily_tokens, monthly_tokens) spent, without holds."""


@dataclass(slots=True)
class Tally:
    scope: Scope = ("", "")
    day: int = 0
    month: int = 0
    day_usd: float = 0.0
    day_tokens: float = 0.0
    month_usd: float = 0.0
    month_tokens: float = 0.0
    held_usd: float = 0.0
    held_tokens: float = 0.0
    holds: int = 0  # reservations open
    touched: float = 0.0  # clock time of the last reservation or charge
    mark: Any = None  # the source's position after the last charge (CLEAN: nothing beyond the store)


@dataclass(slots=True)
class Hold:
    scopes: list[Tally] = field(default_factory=list)
    usd: float = 0.0
    tokens: float = 0.0


def month_index(t: float) -> int:
    day = time.gmtime(t)
    return day.tm_year * 12 + day.tm_mon - 1


class LocalLedger:
    """In-process, for one OMEN server; loads spend from the usage store (``source``)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        source: SpendSource | None = None,
        idle_s: float = IDLE_S,
        max_tallies: int = MAX_TALLIES,
    ) -> None:
        self.clock = clock
        self.source = source
        self.idle_s = idle_s
        self.max_tallies = max_tallies
        self._tallies: OrderedDict[Scope, Tally] = OrderedDict()  # least recently touched first
        self._holds: dict[str, Hold] = {}
        self._loading: dict[Scope, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._tallies)

    def _new(self, scope: Scope, now: float) -> Tally:
        t = self._tallies[scope] = Tally(scope, day=int(now // r.DAY), month=month_index(now), touched=now, mark=CLEAN)
        return t

    def _tally(self, scope: Scope, now: float) -> Tally:
        t = self._tallies.get(scope)
        if t is None:
            t = self._new(scope, now)
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

    def _add_days(self, t: Tally, rows: Sequence[tuple[int, float, int]], now: float) -> None:
        today, month = int(now // r.DAY), month_index(now)
        for day, usd, tokens in rows:
            if month_index(day * r.DAY) != month:
                continue
            t.month_usd += usd
            t.month_tokens += tokens
            if day == today:
                t.day_usd += usd
                t.day_tokens += tokens

    def load(self, rows: Sequence[tuple[str, str, int, float, int]]) -> None:
        """Start from the store's per-day spend ((kind, name, day, usd, tokens) rows, this month's)."""
        now = self.clock()
        for kind, name, day, usd, tokens in rows:
            self._add_days(self._tally((kind, name), now), [(day, usd, tokens)], now)

    # ------------------------------------------------------------ loading and dropping (with a source)

    async def _load(self, scope: Scope) -> None:
        """Make a tally for ``scope`` from the store. The first admission to need it loads it;
        others wait for that load, then look again (and load themselves if it came to nothing)."""
        pending = self._loading.get(scope)
        if pending is not None:
            await asyncio.shield(pending)  # a waiter giving up does not cancel the load
            return
        assert self.source is not None
        done = self._loading[scope] = asyncio.get_running_loop().create_future()
        try:
            rows = await self.source.load(scope, int(r.month_start(self.clock()) // r.DAY))
        except Exception as exc:
            raise SpendUnavailable(scope, f"{type(exc).__name__}: {exc}") from exc
        finally:
            del self._loading[scope]
            done.set_result(None)
        if scope not in self._tallies:  # only loads create tallies when there is a source
            now = self.clock()
            self._add_days(self._new(scope, now), rows, now)

    def _touch(self, t: Tally, now: float) -> None:
        t.touched = now
        if self._tallies.get(t.scope) is t:
            self._tallies.move_to_end(t.scope)

    def _sweep(self, now: float) -> None:
        """Drop tallies from the cold end while they are idle (untouched for idle_s) or there are
        more than max_tallies: only those with no reservation open and their spend committed."""
        source, tallies, cutoff = self.source, self._tallies, now - self.idle_s
        if source is None:
            return
        for _ in range(SWEEP_MAX):
            if not tallies:
                return
            scope, t = next(iter(tallies.items()))
            if t.touched > cutoff and len(tallies) <= self.max_tallies:
                return
            if t.holds:  # a long request: look again later
                self._touch(t, now)
                continue
            if t.mark is not CLEAN and not source.durable(t.mark):
                return  # the store is behind (or failing): keep what only memory knows
            del tallies[scope]

    # ------------------------------------------------------------ the protocol

    async def reserve(
        self, key: str, scopes: Sequence[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        source = self.source
        if source is not None:
            self._sweep(self.clock())
            while missing := [s for s, limits in scopes if limits and s not in self._tallies]:
                for scope in missing:  # no await after the last load: the check below is atomic
                    await self._load(scope)
        now = self.clock()
        tallies = []
        for scope, limits in scopes:
            t = self._tallies.get(scope)
            if t is None:
                if source is not None:
                    continue  # no limit, no tally: its spend lives in the store
                t = self._new(scope, now)
            else:
                self._roll(t, now)
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
            t.holds += 1
            self._touch(t, now)
        self._holds[key] = Hold(tallies, usd, tokens)

    def settle(self, key: str, usd: float, tokens: int) -> None:
        hold = self._holds.pop(key, None)
        if hold is None:
            return
        now = self.clock()
        mark = self.source.position() if self.source is not None else None
        for t in hold.scopes:
            self._roll(t, now)
            t.held_usd = max(0.0, t.held_usd - hold.usd)
            t.held_tokens = max(0.0, t.held_tokens - hold.tokens)
            t.day_usd += usd
            t.month_usd += usd
            t.day_tokens += tokens
            t.month_tokens += tokens
            t.holds -= 1
            t.mark = mark
            self._touch(t, now)

    def used(self, scope: Scope) -> tuple[float, float, float, float]:
        """What this ledger knows (zeros for a scope it holds no tally for)."""
        t = self._tallies.get(scope)
        if t is None:
            return 0.0, 0.0, 0.0, 0.0
        self._roll(t, self.clock())
        return t.day_usd, t.month_usd, t.day_tokens, t.month_tokens

    def held(self, scope: Scope) -> tuple[float, float]:
        t = self._tallies.get(scope)
        if t is None:
            return 0.0, 0.0
        self._roll(t, self.clock())
        return t.held_usd, t.held_tokens
