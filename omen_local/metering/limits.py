"""Rate limits: requests and tokens per sliding minute, per user, workspace and provider.

Exact sliding windows (a log of the last 60 s per scope): "60 rpm" means at most 60
requests in any 60 seconds, and Retry-After is the moment the oldest one leaves the
window. A request is admitted while the last minute's tokens are under ``tpm``; it counts
its estimated prompt at once, corrected to the real count when it ends (so one request
may go over, and the next ones wait until the minute has paid for it). Provider limits
count every attempt sent to the provider and the tokens it really used.

State stays bounded: a window untouched for a whole minute holds nothing any more, so
it is dropped (from the least recently used end, a few per admission); the limiter holds
at most the scopes active in the last minute, whatever names clients invent.

The in-process limiter is the embedded default; the protocol is async where a shared
(Redis) limiter needs a round trip (admission and the provider check).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .ledger import Scope

WINDOW_S = 60.0
SWEEP_MAX = 64  # windows looked at per admission


class RateLimited(Exception):
    def __init__(self, scope: Scope, key: str, limit: float, retry_after: float) -> None:
        super().__init__(f"{scope[0]} {scope[1]}: {key}")
        self.scope, self.key, self.limit, self.retry_after = scope, key, limit, retry_after


class Window:
    """One scope's log of (time, amount) over the last minute; amounts can be corrected later."""

    __slots__ = ("entries", "head", "total", "touched")

    def __init__(self) -> None:
        # A list read from ``head`` (a deque preallocates ~760 bytes: most windows hold one entry).
        self.entries: list[list[float]] = []
        self.head = 0
        self.total = 0.0
        self.touched = 0.0  # the last admission that looked at it; entries are never newer

    def prune(self, now: float) -> None:
        cutoff = now - WINDOW_S
        entries, head = self.entries, self.head
        while head < len(entries) and entries[head][0] <= cutoff:
            self.total -= entries[head][1]
            head += 1
        if head and head * 2 >= len(entries):  # drop what left the window, in one go
            del entries[:head]
            head = 0
        self.head = head

    def add(self, now: float, amount: float) -> list[float]:
        entry = [now, amount]
        self.entries.append(entry)
        self.total += amount
        return entry

    def correct(self, entry: list[float], amount: float) -> None:
        """Change an entry still in the window (no effect once it left it)."""
        entries = self.entries
        if self.head < len(entries) and entry[0] >= entries[self.head][0]:
            self.total += amount - entry[1]
        entry[1] = amount

    def wait(self, now: float, room_below: float) -> float:
        """Seconds until the window total drops below ``room_below``."""
        total = self.total
        for i in range(self.head, len(self.entries)):
            t, amount = self.entries[i]
            total -= amount
            if total < room_below:
                return max(0.001, t + WINDOW_S - now)
        return WINDOW_S


@dataclass(slots=True)
class Grant:
    """What an admission added, so that it can be refunded or corrected."""

    requests: list[tuple[Window, list[float]]] = field(default_factory=list)
    tokens: list[tuple[Window, list[float]]] = field(default_factory=list)


class RateLimiter(Protocol):
    async def acquire(self, scopes: Sequence[tuple[Scope, Mapping[str, float]]], tokens: int) -> Grant:
        """Count one request (and ``tokens``, estimated) in every scope, or raise RateLimited (counting nothing)."""

    def refund(self, grant: Grant) -> None:
        """Undo an acquisition (the request was refused by another check)."""

    def settle(self, grant: Grant, tokens: int) -> None:
        """The request used ``tokens`` in all: correct its estimate."""

    async def provider_wait(self, provider: str, limits: Mapping[str, float]) -> float:
        """0.0 and count one attempt if ``provider`` is under its limits, else seconds to wait."""

    def charge_provider(self, provider: str, tokens: int) -> None:
        """An attempt at ``provider`` used ``tokens``."""


class LocalRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows: OrderedDict[tuple[str, str, str], Window] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._windows)

    def _window(self, scope: Scope, key: str, now: float) -> Window:
        k = (scope[0], scope[1], key)
        w = self._windows.get(k)
        if w is None:
            w = self._windows[k] = Window()
        else:
            w.prune(now)
            self._windows.move_to_end(k)
        w.touched = now
        return w

    def _sweep(self, now: float) -> None:
        """Drop windows untouched for a minute: all their entries have left (a late correction
        of one is a no-op anyway)."""
        windows, cutoff = self._windows, now - WINDOW_S
        for _ in range(SWEEP_MAX):
            if not windows:
                return
            k, w = next(iter(windows.items()))
            if w.touched > cutoff:
                return
            del windows[k]

    async def acquire(self, scopes: Sequence[tuple[Scope, Mapping[str, float]]], tokens: int) -> Grant:
        now = self.clock()
        self._sweep(now)
        picked: list[tuple[Window, str]] = []
        for scope, limits in scopes:
            for key, limit in limits.items():
                w = self._window(scope, key, now)
                if key == "rpm" and w.total + 1 > limit:
                    raise RateLimited(scope, key, limit, w.wait(now, limit))
                if key == "tpm" and w.total >= limit:
                    raise RateLimited(scope, key, limit, w.wait(now, limit))
                picked.append((w, key))
        grant = Grant()
        for w, key in picked:
            if key == "rpm":
                grant.requests.append((w, w.add(now, 1)))
            else:
                grant.tokens.append((w, w.add(now, tokens)))
        return grant

    def refund(self, grant: Grant) -> None:
        for w, entry in (*grant.requests, *grant.tokens):
            w.correct(entry, 0)

    def settle(self, grant: Grant, tokens: int) -> None:
        for w, entry in grant.tokens:
            w.correct(entry, tokens)

    async def provider_wait(self, provider: str, limits: Mapping[str, float]) -> float:
        return self.provider_wait_now(provider, limits)

    def provider_wait_now(self, provider: str, limits: Mapping[str, float]) -> float:
        """:meth:`provider_wait` without awaiting (it never needs to here)."""
        now = self.clock()
        scope = ("provider", provider)
        rpm, tpm = limits.get("rpm"), limits.get("tpm")
        if tpm is not None:
            w = self._window(scope, "tpm", now)
            if w.total >= tpm:
                return w.wait(now, tpm)
        if rpm is not None:
            w = self._window(scope, "rpm", now)
            if w.total + 1 > rpm:
                return w.wait(now, rpm)
            w.add(now, 1)
        return 0.0

    def charge_provider(self, provider: str, tokens: int) -> None:
        now = self.clock()
        self._window(("provider", provider), "tpm", now).add(now, tokens)
