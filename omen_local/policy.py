"""The enforcement interface the router calls: rate limits, quotas, provider limits.

The router knows nothing of ledgers or windows; it asks a :class:`Policy` before it
dispatches and tells it what the request really cost afterwards. The embedded default
lives in ``omen_local.metering``; a team deployment can supply one backed by Redis or
PostgreSQL without touching the routing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .api.request import ChatRequest
    from .routing.router import RequestContext


@dataclass(frozen=True, slots=True)
class CostBound:
    """The most a request can cost: estimated prompt plus its output cap, at the dearest candidate."""

    prompt_tokens: int
    max_output_tokens: int
    worst_usd: float

    @property
    def worst_tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens


class Policy(Protocol):
    async def admit(self, ctx: RequestContext, req: ChatRequest, bound: CostBound) -> None:
        """Check rate limits and reserve quota for ``bound``; raise OmenError (429/402) to refuse.

        Reservations are keyed by ``ctx.request_id``; ``settle`` is always called after a
        successful ``admit``, whatever happens to the request.
        """

    def provider_wait(self, provider: str) -> float:
        """0.0 if one more request may go to ``provider`` now (and count it), else seconds to wait."""

    def settle(self, ctx: RequestContext) -> None:
        """Release the reservation and charge what the request cost (``ctx.spent_usd``/``spent_tokens``)."""


class NoPolicy:
    """No limits: for tests of routing alone."""

    async def admit(self, ctx: RequestContext, req: ChatRequest, bound: CostBound) -> None:
        return None

    def provider_wait(self, provider: str) -> float:
        return 0.0

    def settle(self, ctx: RequestContext) -> None:
        return None
