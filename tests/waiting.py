"""Waiting on what a test can observe, never on the clock.

``until`` polls a condition with a deadline: the deadline only bounds a failure (a test on
a loaded machine waits longer rather than failing), and a pass takes as long as the
condition takes to hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

DEADLINE_S = 10.0  # generous: under `stress --cpu 2` a loop turn can take a while


async def until(check: Callable[[], T], what: str, within: float = DEADLINE_S) -> T:
    """Return ``check()``'s first truthy value; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:g} s for {what}")
        await asyncio.sleep(0.005)  # a poll interval, not a synchronisation guess


class ManualClock:
    """A clock for an object that takes one (``HealthBook``, ``QuotaBook``): it moves only
    when the test says, so a cooldown passes exactly, however loaded the machine."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_post(seen: Sequence[Any]) -> Callable[[], bool]:
    """A check: has this fake upstream (its ``seen``/``requests`` list) received a request
    with a body since the call? Health probes' GETs have none and do not count."""

    def posts() -> int:
        return sum(1 for r in seen if r.body is not None)

    before = posts()
    return lambda: posts() > before
