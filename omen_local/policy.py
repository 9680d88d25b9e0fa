"""The enforcement interface the router calls: rate limits, quotas, provider limits.

The router knows nothing of ledgers or windows: it asks a :class:`Policy` before it
dispatches and tells it when the request is over. What the request cost reaches the
policy through the usage sink (each attempt's UsageEvent, once), not through the router.
The embedded default lives in ``omen_local.metering``; a team deployment can supply one
backed by Redis or PostgreSQL without touching the routing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .caller import Caller


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class CostBound:
    """The most a request can cost: estimated prompt plus its output cap, at the dearest candidate."""

    prompt_tokens: int
    max_output_tokens: int
    worst_usd: float

    @property
    def worst_tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens


class Policy(Protocol):
    async def admit(self, caller: Caller, bound: CostBound) -> None:
        """Check rate limits and reserve quota for ``bound``; raise OmenError (429/402) to refuse.

        Reservations are keyed by ``caller.request_id``; ``release`` is always called after
        a successful ``admit``, whatever happens to the request.
        """

    async def provider_wait(self, provider: str) -> float:
        """0.0 if one more request may go to ``provider`` now (and count it), else seconds to wait.

        Async: a team's limits are counted in Redis, a round trip the serving loop must not block on."""

    def release(self, request_id: str) -> None:
        """The request is over (its attempts have all reported): drop what is left of its hold."""


class NoPolicy:
    """No limits: for tests of routing alone."""

    async def admit(self, caller: Caller, bound: CostBound) -> None:
        return None

    async def provider_wait(self, provider: str) -> float:
        return 0.0

    def release(self, request_id: str) -> None:
        return None
