"""Session stickiness: a session keeps the model it was first served by.

A bounded LRU with a time-to-live, keyed by (user, session id), so one user's session
ids never steer another's requests.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .catalog import Target


class StickyMap:
    def __init__(self, ttl_s: float = 3600.0, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self.clock = clock
        self._map: OrderedDict[tuple[str, str], tuple[Target, float]] = OrderedDict()

    def get(self, user: str, session: str) -> Target | None:
        key = (user, session)
        hit = self._map.get(key)
        if hit is None:
            return None
        target, at = hit
        if self.clock() - at > self.ttl_s:
            del self._map[key]
            return None
        self._map.move_to_end(key)
        return target

    def remember(self, user: str, session: str, target: Target) -> None:
        key = (user, session)
        self._map[key] = (target, self.clock())
        self._map.move_to_end(key)
        while len(self._map) > self.size:
            self._map.popitem(last=False)
