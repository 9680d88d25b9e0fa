"""The dispatcher: owns the providers and their health, makes and runs attempts.

Strategies ask it for attempts and run them through ``open`` (a stream up to its first
token) or ``complete`` (a whole answer), with the first-token timeout applied. Each
attempt hands its records back here once; the dispatcher passes usage to the sink and
verdicts to health, and tells observers when a provider goes up or down. Nothing here
decides which candidates a request gets (that is the planner) or what to do with the
answers (that is the strategy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.request import ChatRequest
from ..caller import Caller
from ..config import Price
from ..observe import HealthEvent, Hub, Outcome, Record, Sink
from ..providers.base import Completion, Embeddings, Provider
from ..providers.errors import LimitReached, RequestRefused, UpstreamError, UpstreamTimeout
from ..providers.refusals import CONTEXT
from .attempt import Attempt
from .catalog import Target
from .health import HealthBook
from .planner import Plan


@dataclass(slots=True)
class Call:
    """One request as the strategies see it: who asked, what, the plan, its attempts so far."""

    caller: Caller
    request: ChatRequest
    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def stream(self) -> bool:
        return self.request.stream

    @property
    def spent_usd(self) -> float:
        """What the attempts that have reported cost (the request's own budget reads this)."""
        return sum(a.cost_usd for a in self.attempts)


def name_the_model(target: Target, err: UpstreamError) -> None:
    """A server's "prompt does not fit" names the model: the provider's words name only the
    provider, and the user (Claude Code shows these words, docs/clients.md) must know which
    model's window to outgrow when a server has several."""
    if isinstance(err, RequestRefused) and err.reason == CONTEXT and not err.message.startswith(f"{target}:"):
        err.message = f"{target}: {err.message}"
        err.args = (err.message,)


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: HealthBook,
        hub: Hub,
        sink: Sink,
        price_for: Callable[[str, str], Price],
        provider_wait: Callable[[str], Awaitable[float]],
        first_token_timeout_s: float,
    ) -> None:
        self.providers = providers
        self.health = health
        self.hub = hub
        self._sink = sink
        self._price_for = price_for
        self._provider_wait = provider_wait
        self.first_token_timeout_s = first_token_timeout_s

    # ------------------------------------------------------------ which targets may be tried now

    async def admissible(self, target: Target, errors: list[UpstreamError]) -> bool:
        """May one more request go to ``target`` under OMEN's own provider limits? (counts it)"""
        wait = await self._provider_wait(target.provider)
        if wait > 0:
            errors.append(
                LimitReached(target.provider, f"{target.provider} is at its configured rate limit", status=429, retry_after=wait)
            )
            return False
        return True

    async def live(self, targets: Iterable[Target], errors: list[UpstreamError]) -> AsyncIterator[Target]:
        """``targets`` in order, skipping those that went down during this request or are over limits."""
        for i, target in enumerate(targets):
            if i > 0 and not self.health.available(target):
                continue
            if await self.admissible(target, errors):
                yield target

    def price_for(self, target: Target) -> Price:
        return self._price_for(target.provider, target.model)

    # ------------------------------------------------------------ attempts

    def attempt(self, call: Call, target: Target, body: dict[str, Any] | None = None) -> Attempt:
        """A new attempt of ``call`` at ``target`` (with the plan's budgeted body unless given)."""
        price = self.price_for(target)
        plan = call.plan
        self.health.begin(target)
        attempt = Attempt(
            f"{call.caller.request_id}.{len(call.attempts)}",
            call.caller,
            plan.strategy,
            target,
            self.providers[target.provider],
            price,
            body if body is not None else plan.body_for(call.request.body, price),
            plan.bound.prompt_tokens,
            self,
            call.request.op,
            intent=plan.intent,
        )
        call.attempts.append(attempt)
        return attempt

    async def open(self, attempt: Attempt) -> None:
        """Open a stream up to its first content; on failure the attempt is closed and reported."""
        limit = self.first_token_timeout_s
        try:
            async with asyncio.timeout(limit):
                await attempt.open()
        except TimeoutError:
            err = UpstreamTimeout(attempt.target.provider, f"{attempt.target} sent no token within {limit:g}s")
            await attempt.close(Outcome.ERROR, err)
            raise err from None
        except UpstreamError as err:
            name_the_model(attempt.target, err)
            await attempt.close(Outcome.ERROR, err)
            raise
        except asyncio.CancelledError:
            await attempt.close(Outcome.CANCELLED)
            raise
        self._first_token(attempt)
        attempt.announce()

    async def complete(self, attempt: Attempt) -> Completion | Embeddings:
        """A whole answer; on failure the attempt is reported."""
        try:
            done = await attempt.complete()
        except UpstreamError as err:
            name_the_model(attempt.target, err)
            attempt.report(Outcome.ERROR, err)
            raise
        except asyncio.CancelledError:
            attempt.report(Outcome.CANCELLED)
            raise
        self._first_token(attempt)
        attempt.report(Outcome.OK)
        return done

    # ------------------------------------------------------------ Reporter (called by attempts)

    def record(self, record: Record) -> None:
        self._sink(record)

    def ended(self, attempt: Attempt, outcome: Outcome, err: UpstreamError | None) -> None:
        target = attempt.target
        if err is not None:
            if self.health.failed(target, err):
                scope = "provider" if not self.health.provider_available(target.provider) else str(target)
                self.hub.emit(HealthEvent(target.provider, "down", f"{scope}: {err.message}"))
        elif outcome in (Outcome.OK, Outcome.BUDGET_CUT) and attempt.streamed and not attempt.estimated:
            # Speed is measured on streams only: a whole answer arrives at once.
            assert attempt.usage is not None and attempt.generation_s is not None
            self.health.finished(target, attempt.usage.completion_tokens, attempt.generation_s)
        else:
            self.health.release(target)

    def _first_token(self, attempt: Attempt) -> None:
        if self.health.first_token(attempt.target, attempt.latency_ms, streamed=not attempt.whole):
            self.hub.emit(HealthEvent(attempt.target.provider, "up"))
