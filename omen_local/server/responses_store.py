"""Stored responses for ``previous_response_id`` and ``GET /v1/responses/{id}``: in memory, bounded.

Entries belong to the user and workspace of the token that created them (the door's
``_owner`` key): any other lookup finds nothing (not even whether the id exists). They expire ``ttl_s`` after they were made,
and the least recently used go first when there are more than ``max_entries`` or
their JSON size passes ``max_bytes``. Nothing survives a restart, by design: a local
router keeps no conversation archive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import jsonutil

MAX_ENTRIES = 1000
MAX_BYTES = 64 * 1024 * 1024
TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Stored:
    user: str
    response: dict[str, Any]  # the response object, as GET returns it
    history: list[dict[str, Any]]  # the conversation so far as chat messages (no instructions)
    expires: float
    size: int


class ResponseStore:
    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, Stored] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, user: str, response_id: str, response: dict[str, Any], history: list[dict[str, Any]]) -> bool:
        """Keep a response; False if it alone is larger than the store."""
        size = len(jsonutil.dumps(response)) + len(jsonutil.dumps(history))
        if size > self.max_bytes:
            return False
        self._drop(response_id)
        self._entries[response_id] = Stored(user, response, history, self.clock() + self.ttl_s, size)
        self.bytes += size
        now = self.clock()
        while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
            self._drop(next(iter(self._entries)))
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            self._drop(key)
        return True

    def get(self, user: str, response_id: str) -> Stored | None:
        entry = self._entries.get(response_id)
        if entry is None or entry.user != user:
            return None
        if entry.expires <= self.clock():
            self._drop(response_id)
            return None
        self._entries.move_to_end(response_id)
        return entry

    def delete(self, user: str, response_id: str) -> bool:
        if self.get(user, response_id) is None:
            return False
        self._drop(response_id)
        return True

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self.bytes -= entry.size
