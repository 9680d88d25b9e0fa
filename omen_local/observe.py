"""In-process observation: the tray app (or anything hosting OMEN) sees usage and health live.

Listeners are plain callables run on the server's loop; they must be quick (queue the
event, update a chart). A failing listener is logged and never breaks a request.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .providers.base import Usage

log = logging.getLogger(__name__)

class Outcome(StrEnum):
    OK = "ok"  # answered (a whole answer that lost a race still counts: it was paid for)
    ERROR = "error"
    CANCELLED = "cancelled"  # the client left, or the attempt lost a race
    BUDGET_CUT = "budget_cut"  # the stream was cut when the request's budget was spent


OUTCOMES = tuple(o.value for o in Outcome)


# The records the journal writes have no __slots__: orjson encodes a dataclass from its
# __dict__ and, without one, pays for an AttributeError before its fallback (per request).
# Nor are they frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__, about 8x the cost of a plain one (2.8 us against 0.37 us for
# UsageEvent's 18 fields). Records are made per request and never changed after.
@dataclass
class AttemptStarted:
    """A stream began reaching the client: its UsageEvent will follow, unless the process dies.

    A durable store records it first, so that after a crash the attempt can still be
    charged (estimated from ``prompt_tokens`` and what was streamed).
    """

    attempt_id: str
    request_id: str
    user: str
    workspace: str | None
    client: str | None
    session: str | None
    provider: str
    model: str
    strategy: str
    prompt_tokens: int
    time: float = field(default_factory=time.time)
    relayed: bool = False  # through a team gateway, which meters it (gateway.py): decided at the attempt's start


@dataclass
class AttemptProgress:
    """A started stream has sent ``output_chars`` characters so far (every ``PROGRESS_CHARS``).

    Only the durable store cares: if the process dies mid-stream, the attempt is
    charged for what had been streamed up to its last progress note.
    """

    attempt_id: str
    output_chars: int
    time: float = field(default_factory=time.time)
    relayed: bool = False  # as its AttemptStarted


PROGRESS_CHARS = 512  # about 128 tokens between progress notes


@dataclass
class UsageEvent:
    """One upstream attempt: what it was for, what it cost, how it ended."""

    attempt_id: str
    request_id: str
    user: str
    workspace: str | None
    client: str | None
    session: str | None
    provider: str
    model: str
    strategy: str
    usage: Usage
    cost_usd: float
    ttft_ms: float | None
    total_ms: float
    outcome: Outcome
    estimated: bool = False
    error: str | None = None
    time: float = field(default_factory=time.time)
    intent: str | None = None  # the intent bucket the request was routed by (for the tray's table)
    asked: str | None = None  # the model name the client sent, when [aliases] patterns mapped it
    instance: str | None = None  # a team gateway's: the laptop's OMEN that relayed it (the books' instance)
    relayed: bool = False  # as its AttemptStarted: the same decision on every record of an attempt


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A provider's health changed (up, down, models discovered)."""

    provider: str
    state: str
    detail: str | None = None
    time: float = field(default_factory=time.time)


Record = UsageEvent | AttemptStarted | AttemptProgress  # what the usage sink keeps
Event = UsageEvent | HealthEvent | AttemptStarted | AttemptProgress
Listener = Callable[[Event], None]
Sink = Callable[[Record], None]


class Hub:
    """Fan-out of events to listeners, plus a short memory of recent usage."""

    def __init__(self, keep: int = 1000) -> None:
        self._listeners: list[Listener] = []
        self.recent: deque[UsageEvent] = deque(maxlen=keep)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; call the returned function to remove it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: Event) -> None:
        if isinstance(event, UsageEvent):
            self.recent.append(event)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed")
