"""Provider health from what requests and probes observe: up, down until when, and why.

A provider that refused connections, timed out or answered 5xx is skipped for a
cool-down; a 429 is skipped for as long as its Retry-After asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..providers.base import UpstreamError


@dataclass(slots=True)
class ProviderHealth:
    state: str = "unknown"  # unknown | up | down
    down_until: float = 0.0
    last_error: str | None = None
    last_latency_ms: float | None = None
    last_ok: float | None = None
    successes: int = 0
    failures: int = 0


class HealthBook:
    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._by_provider: dict[str, ProviderHealth] = {}

    def get(self, provider: str) -> ProviderHealth:
        h = self._by_provider.get(provider)
        if h is None:
            h = self._by_provider[provider] = ProviderHealth()
        return h

    def available(self, provider: str) -> bool:
        return self.get(provider).down_until <= self.clock()

    def retry_in(self, provider: str) -> float:
        return max(0.0, self.get(provider).down_until - self.clock())

    def ok(self, provider: str, latency_ms: float | None = None) -> bool:
        """Record a success; True if the provider was not up before."""
        h = self.get(provider)
        changed = h.state != "up"
        h.state, h.down_until, h.successes = "up", 0.0, h.successes + 1
        h.last_ok = time.time()
        if latency_ms is not None:
            h.last_latency_ms = round(latency_ms, 2)
        return changed

    def failed(self, err: UpstreamError) -> bool:
        """Record a failure; True if the provider is now down (skipped for a while)."""
        h = self.get(err.provider)
        h.failures += 1
        h.last_error = err.message
        pause = self._pause(err)
        if pause <= 0:
            return False
        h.state = "down"
        h.down_until = max(h.down_until, self.clock() + pause)
        return True

    def _pause(self, err: UpstreamError) -> float:
        if err.kind in ("connect", "timeout"):
            return self.cooldown_s
        if err.kind == "http" and err.status is not None:
            if err.status == 429:
                return err.retry_after if err.retry_after is not None else self.cooldown_s
            if err.status in (401, 403):
                return max(self.cooldown_s, 60.0)
            if err.status >= 500:
                return err.retry_after if err.retry_after is not None else self.cooldown_s
        return 0.0

    def snapshot(self, provider: str) -> dict[str, Any]:
        h = self.get(provider)
        return {
            "state": h.state if self.available(provider) or h.state != "up" else "down",
            "retry_in_s": round(self.retry_in(provider), 3),
            "last_error": h.last_error,
            "last_latency_ms": h.last_latency_ms,
            "last_ok": h.last_ok,
            "successes": h.successes,
            "failures": h.failures,
        }
