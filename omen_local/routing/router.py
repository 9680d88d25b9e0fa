"""The router: one request through plan -> admit -> strategy -> end.

Data flows one way: the planner picks candidates (reading health and stickiness), the
policy admits the request (rate limits, a quota hold), a strategy runs attempts through
the dispatcher (which owns providers, health and the usage sink), and the request's end
remembers the session's model and releases what is left of the hold. Nothing below the
router calls back into it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..api.request import ChatRequest
from ..caller import Caller
from ..config import Config, StrategyName
from ..errors import OmenError
from ..policy import NoPolicy, Policy
from ..providers.base import Completion, Embeddings
from .catalog import Catalog, Target
from .dispatch import Call, Dispatcher
from .planner import Plan, Planner
from .session import StreamSession
from .sticky import StickyMap
from .strategies import Answer, Completed, Strategy

__all__ = ["Answer", "Embedded", "Plan", "Routed", "Router"]


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class Routed:
    """A whole answer, the plan that led to it and who gave it."""

    plan: Plan
    target: Target
    completion: Completion
    cost_usd: float  # every attempt of the request, the losers' too


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class Embedded:
    """An embeddings request's vectors, the plan and who computed them."""

    plan: Plan
    target: Target
    embeddings: Embeddings
    cost_usd: float


class Router:
    def __init__(
        self,
        config: Config,
        planner: Planner,
        dispatcher: Dispatcher,
        strategies: dict[StrategyName, Strategy],
        sticky: StickyMap,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        self.planner = planner
        self.dispatcher = dispatcher
        self.strategies = strategies
        self.sticky = sticky
        self.policy: Policy = policy or NoPolicy()

    @property
    def catalog(self) -> Catalog:
        return self.planner.catalog

    async def complete(self, req: ChatRequest, caller: Caller) -> Routed:
        """A whole answer for a non-streamed chat or text completion."""
        call, answer = await self._run(req, caller)
        assert isinstance(answer, Completed) and isinstance(answer.completion, Completion)
        return Routed(call.plan, answer.target, answer.completion, call.spent_usd)

    async def embed(self, req: ChatRequest, caller: Caller) -> Embedded:
        """The vectors for an embeddings request."""
        call, answer = await self._run(req, caller)
        assert isinstance(answer, Completed) and isinstance(answer.completion, Embeddings)
        return Embedded(call.plan, answer.target, answer.completion, call.spent_usd)

    async def stream(self, req: ChatRequest, caller: Caller) -> StreamSession:
        """The response stream for a streamed request (its first content is already in).

        The caller must ``finish()`` it, whatever happens: that ends the request.
        """
        _, answer = await self._run(req, caller)
        assert isinstance(answer, StreamSession)
        return answer

    async def _run(self, req: ChatRequest, caller: Caller) -> tuple[Call, Answer]:
        """Plan, admit and run the request's strategy, within ``max_latency_ms`` if given."""
        plan = self.planner.plan(req, caller)
        await self.policy.admit(caller, plan.bound)
        call = Call(caller, req, plan)
        strategy = self.strategies[plan.strategy]
        deadline = None if strategy.self_timed else plan.deadline_ms
        try:
            if deadline is None:
                answer = await strategy.run(call, self.dispatcher)
            else:
                try:
                    async with asyncio.timeout(deadline / 1000):
                        answer = await strategy.run(call, self.dispatcher)
                except TimeoutError:
                    raise OmenError(
                        504,
                        f"no answer within omen.max_latency_ms={deadline}",
                        code="deadline_exceeded",
                        param="omen.max_latency_ms",
                    ) from None
        except BaseException:
            self._end(call, None)
            raise
        if isinstance(answer, StreamSession):
            answer.on_end = lambda served: self._end(call, served)
        else:
            self._end(call, answer.target)
        return call, answer

    def _end(self, call: Call, served_by: Target | None) -> None:
        """Remember the session's model and release the quota hold (once per request)."""
        caller = call.caller
        if served_by is not None and caller.session is not None:
            self.sticky.remember(caller.user, caller.session, served_by)
        self.policy.release(caller.request_id)
