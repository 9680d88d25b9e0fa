"""When to try OMEN again while degraded: exponential backoff, pure and clock-driven.

A refused connection costs microseconds, but a black-holed one costs the whole connect
timeout, so re-probes back off (0.5 s doubling to 15 s). A *new* server (the endpoint file
names another pid) is tried at once: that is how the kit returns to a restarted OMEN
without waiting out the backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 15.0


DEFAULT_BACKOFF = Backoff()


class Health:
    def __init__(self, backoff: Backoff = DEFAULT_BACKOFF, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self.down_reason: str | None = None  # None: OMEN is (believed) up
        self.down_pid: int | None = None
        self.delay_s = backoff.initial_s
        self.next_probe = 0.0
        self.failures = 0

    @property
    def degraded(self) -> bool:
        return self.down_reason is not None

    def should_try(self, pid: int | None = None) -> bool:
        """Whether this request should go to OMEN first."""
        if self.down_reason is None:
            return True
        if pid is not None and pid != self.down_pid:
            return True  # another server published itself since
        return self.clock() >= self.next_probe

    def up(self) -> None:
        self.down_reason = None
        self.down_pid = None
        self.delay_s = self.backoff.initial_s
        self.failures = 0

    def down(self, reason: str, pid: int | None = None) -> None:
        if self.down_reason is not None:
            self.delay_s = min(self.delay_s * self.backoff.factor, self.backoff.cap_s)
        self.down_reason = reason
        self.down_pid = pid
        self.failures += 1
        self.next_probe = self.clock() + self.delay_s
