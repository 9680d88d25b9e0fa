"""The router: plan the candidates for a request, admit it, run its strategy.

The Router is the strategies' toolbox: it makes attempts, opens or completes them with
the timeouts and health bookkeeping, and turns the outcome of a request into usage,
stickiness and a settled quota. The strategies themselves live in strategies.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import estimate
from ..api.request import ChatRequest
from ..config import Config
from ..errors import OmenError
from ..observe import HealthEvent, Hub
from ..policy import CostBound, NoPolicy, Policy
from ..providers.base import Completion, Provider, UpstreamError
from ..tokens import Identity
from . import budget as budgets
from .attempt import Attempt
from .catalog import Catalog, Target
from .health import HealthBook
from .intent import guess_intent
from .session import StreamSession
from .sticky import StickyMap
from .strategies import SELF_TIMED, STRATEGIES

__all__ = ["Plan", "RequestContext", "Router"]


@dataclass(slots=True)
class RequestContext:
    """Who asked, and what the request has spent so far across its attempts."""

    request_id: str
    identity: Identity
    client: str | None = None
    workspace: str | None = None
    session: str | None = None
    spent_usd: float = 0.0
    spent_tokens: int = 0
    admitted: bool = False
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    strategy: str
    intent: str | None
    intent_guessed: bool
    targets: list[Target]
    bound: CostBound
    budget_usd: float | None = None
    sticky: bool = False
    fanout: int = 1  # how many attempts the strategy may pay for at once


class Router:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        catalog: Catalog,
        health: HealthBook,
        hub: Hub,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        self.providers = providers
        self.catalog = catalog
        self.health = health
        self.hub = hub
        self.policy: Policy = policy or NoPolicy()
        self.sticky = StickyMap(ttl_s=config.defaults.sticky_ttl_s)

    # ------------------------------------------------------------ planning

    def _candidates(self, req: ChatRequest) -> tuple[str | None, bool, list[Target]]:
        """Explicit model or intent bucket (named or guessed), then the allowlist."""
        hints = req.hints
        intent: str | None = None
        guessed = False
        if req.model == "auto":
            intent = hints.intent
            if intent is None:
                default = self.config.defaults.intent
                intent = guess_intent(req.body, self.config.intents, default) if self.config.defaults.guess_intent else default
                guessed = True
            targets = self.catalog.for_intent(intent)
        else:
            targets = self.catalog.resolve(req.model)
        if hints.providers is not None:
            allowed = [t for t in targets if t.provider in hints.providers]
            if not allowed and targets:
                raise OmenError(
                    400,
                    f"no candidate for '{req.model}' is served by the allowed providers ({', '.join(hints.providers)})",
                    code="no_allowed_provider",
                    param="omen.providers",
                )
            targets = allowed
        return intent, guessed, targets

    def _available(self, req: ChatRequest, intent: str | None, targets: list[Target]) -> list[Target]:
        """Usable (enabled, keyed) and healthy targets; 503 naming why when none is."""
        reasons: list[str] = []
        usable = []
        for t in targets:
            why = self.catalog.usable(t.provider)
            if why is None:
                usable.append(t)
            else:
                reasons.append(f"{t.provider}: {why}")
        healthy = [t for t in usable if self.health.available(t)]
        if healthy:
            return healthy
        if usable:
            wait = min(self.health.retry_in(t) for t in usable)
            errors = "; ".join(
                f"{t}: {self.health.model(t).last_error or self.health.get(t.provider).last_error}" for t in usable[:3]
            )
            raise OmenError(
                503, f"no provider is available right now ({errors})", code="no_provider_available", retry_after=wait
            )
        detail = "; ".join(dict.fromkeys(reasons)) or "no candidates are configured for it"
        what = f"intent '{intent}'" if intent else f"model '{req.model}'"
        raise OmenError(503, f"no provider can serve {what}: {detail}", code="no_provider_available")

    def _within_deadline(self, req: ChatRequest, targets: list[Target]) -> list[Target]:
        """Drop candidates whose measured time to first token cannot meet ``max_latency_ms``."""
        deadline = req.hints.max_latency_ms
        if deadline is None:
            return targets
        fast = [t for t in targets if (self.health.ttft_estimate(t) or 0.0) <= deadline]
        if not fast:
            slowest = ", ".join(f"{t} ~{self.health.ttft_estimate(t):.0f} ms" for t in targets[:3])
            raise OmenError(
                504,
                f"no candidate can answer within omen.max_latency_ms={deadline} (recent time to first token: {slowest})",
                code="deadline_exceeded",
                param="omen.max_latency_ms",
            )
        return fast

    def _stick(self, req: ChatRequest, ctx: RequestContext, targets: list[Target]) -> tuple[list[Target], bool]:
        """With ``stickiness: session``, the session's model goes first while it is a candidate."""
        if (req.hints.stickiness or self.config.defaults.stickiness) != "session":
            return targets, False
        if ctx.session is None:
            if req.hints.stickiness == "session":
                raise OmenError(
                    400,
                    "omen.stickiness 'session' needs a session id (omen.session or the x-omen-session header)",
                    param="omen.session",
                )
            return targets, False
        held = self.sticky.get(ctx.identity.user, ctx.session)
        if held is not None and held in targets:
            return [held, *[t for t in targets if t != held]], True
        return targets, True

    def plan(self, req: ChatRequest, ctx: RequestContext) -> Plan:
        """Candidates in order, filtered by allowlist, usability, health, deadline and budget."""
        strategy = req.hints.strategy or self.config.defaults.strategy
        intent, guessed, targets = self._candidates(req)
        targets = self._available(req, intent, targets)
        targets = self._within_deadline(req, targets)
        targets, sticky = self._stick(req, ctx, targets)

        prompt = estimate.prompt_tokens(req.body)
        requested = budgets.requested_output_cap(req.body)
        cap = requested or self.config.defaults.assumed_output_tokens
        budget = req.hints.budget_usd if req.hints.budget_usd is not None else self.config.defaults.budget_usd
        worst = {t: budgets.worst_cost(self.config.price_for(t.provider, t.model), prompt, cap) for t in targets}
        if budget is not None:
            if requested is not None:  # the client's own output cap: its worst case must fit
                need = worst
                what = f"the prompt (about {prompt} tokens) plus max_tokens {requested}"
                fits = [t for t in targets if worst[t] <= budget]
            else:  # no cap given: the prompt must fit; body_for caps the output to what is left
                need = {t: budgets.worst_cost(self.config.price_for(t.provider, t.model), prompt, 0) for t in targets}
                what = f"the prompt (about {prompt} tokens) and some output"
                fits = [
                    t
                    for t in targets
                    if budgets.affordable_output(self.config.price_for(t.provider, t.model), prompt, budget) != 0
                ]
            if not fits:
                cheapest = min(targets, key=lambda t: need[t])
                raise OmenError(
                    402,
                    f"omen.budget_usd {budget:g} does not cover {what} on any candidate; the cheapest, "
                    f"{cheapest}, needs {need[cheapest]:.6g} USD",
                    code="budget_exceeded",
                    param="omen.budget_usd",
                )
            targets = fits
        # With a budget the request cannot cost more than it (body_for caps the output).
        fanout = self._fanout(strategy, req)
        top = max(worst[t] for t in targets) * fanout
        bound = CostBound(prompt, cap, top if budget is None else min(top, budget))
        return Plan(strategy, intent, guessed, targets, bound, budget, sticky, fanout)

    def _fanout(self, strategy: str, req: ChatRequest) -> int:
        """Attempts a strategy may run (and pay for) at once: the worst case is that many answers."""
        if strategy == "single":
            return 1
        k = req.hints.k or self.config.defaults.k
        if strategy == "speculate_k":
            return max(2, k)
        if strategy == "parallel_merge" and self.config.defaults.merge_model:
            return k + 1
        return k

    def body_for(self, req: ChatRequest, plan: Plan, target: Target) -> dict[str, Any]:
        """The body sent to ``target``: the request's, with the output capped to what the budget buys."""
        if plan.budget_usd is None:
            return req.body
        price = self.config.price_for(target.provider, target.model)
        # Fan-out strategies share the budget between the attempts they may pay for.
        cap = budgets.affordable_output(price, plan.bound.prompt_tokens, plan.budget_usd / plan.fanout)
        return req.body if cap is None else budgets.with_output_cap(req.body, max(1, cap))

    def merge_target(self) -> Target | None:
        ref = self.config.defaults.merge_model
        if not ref:
            return None
        target = self.catalog.expand(ref)[0]
        return target if self.catalog.usable(target.provider) is None and self.health.available(target) else None

    # ------------------------------------------------------------ running a request

    async def complete(self, req: ChatRequest, ctx: RequestContext) -> tuple[Plan, Target, Completion]:
        """A whole answer for a non-streamed request."""
        plan, result = await self._run(req, ctx, stream=False)
        assert isinstance(result, tuple)
        return plan, *result

    async def stream(self, req: ChatRequest, ctx: RequestContext) -> tuple[Plan, StreamSession]:
        """The response stream for a streamed request (its first content is already in)."""
        plan, result = await self._run(req, ctx, stream=True)
        assert isinstance(result, StreamSession)
        return plan, result

    async def _run(
        self, req: ChatRequest, ctx: RequestContext, *, stream: bool
    ) -> tuple[Plan, tuple[Target, Completion] | StreamSession]:
        """Plan, admit and run the request's strategy, within ``max_latency_ms`` if given."""
        plan = self.plan(req, ctx)
        await self.policy.admit(ctx, req, plan.bound)
        ctx.admitted = True
        strategy = STRATEGIES[plan.strategy]
        deadline = None if plan.strategy in SELF_TIMED else req.hints.max_latency_ms
        try:
            if deadline is None:
                result = await strategy(self, ctx, req, plan, stream)
            else:
                try:
                    async with asyncio.timeout(deadline / 1000):
                        result = await strategy(self, ctx, req, plan, stream)
                except TimeoutError:
                    raise OmenError(
                        504,
                        f"no answer within omen.max_latency_ms={deadline}",
                        code="deadline_exceeded",
                        param="omen.max_latency_ms",
                    ) from None
        except BaseException:
            self.finish_request(ctx, None)
            raise
        if not isinstance(result, StreamSession):
            self.finish_request(ctx, result[0])
        return plan, result

    def finish_request(self, ctx: RequestContext, served_by: Target | None) -> None:
        """Remember the session's model and settle the quota reservation (once)."""
        if served_by is not None and ctx.session is not None:
            self.sticky.remember(ctx.identity.user, ctx.session, served_by)
        if ctx.admitted:
            ctx.admitted = False
            self.policy.settle(ctx)

    # ------------------------------------------------------------ attempts (the strategies' toolbox)

    def admissible(self, target: Target, errors: list[UpstreamError]) -> bool:
        """May one more request go to ``target`` under OMEN's own provider limits?"""
        wait = self.policy.provider_wait(target.provider)
        if wait > 0:
            errors.append(
                UpstreamError(target.provider, "limit", f"{target.provider} is at its configured rate limit", status=429, retry_after=wait)
            )
            return False
        return True

    def live(self, plan: Plan, errors: list[UpstreamError]) -> Iterator[Target]:
        """The plan's targets, skipping those that went down during this request or are over limits."""
        for i, target in enumerate(plan.targets):
            if i > 0 and not self.health.available(target):
                continue
            if self.admissible(target, errors):
                yield target

    def attempt(
        self, ctx: RequestContext, req: ChatRequest, plan: Plan, target: Target, *, body: dict[str, Any] | None = None
    ) -> Attempt:
        self.health.begin(target)
        return Attempt(self, ctx, plan, target, body if body is not None else self.body_for(req, plan, target))

    async def open_attempt(self, attempt: Attempt) -> None:
        """Open a stream up to its first content; on failure the attempt is closed and reported."""
        first_token = self.config.defaults.first_token_timeout_s
        try:
            async with asyncio.timeout(first_token):
                await attempt.open()
        except TimeoutError:
            err = UpstreamError(attempt.target.provider, "timeout", f"{attempt.target} sent no token within {first_token:g}s")
            await attempt.close("error", err)
            raise err from None
        except UpstreamError as err:
            await attempt.close("error", err)
            raise
        except asyncio.CancelledError:
            await attempt.close("cancelled")
            raise
        self.first_token(attempt)
        attempt.announce()

    async def complete_attempt(self, attempt: Attempt) -> Completion:
        """A whole answer; on failure the attempt is reported."""
        try:
            done = await attempt.complete()
        except UpstreamError as err:
            attempt.report("error", err)
            raise
        except asyncio.CancelledError:
            attempt.report("cancelled")
            raise
        self.first_token(attempt)
        attempt.report("ok")
        return done

    # ------------------------------------------------------------ health bookkeeping

    def first_token(self, attempt: Attempt) -> None:
        if self.health.first_token(attempt.target, attempt.latency_ms, streamed=not attempt.whole):
            self.hub.emit(HealthEvent(attempt.target.provider, "up"))

    def attempt_ended(self, attempt: Attempt, outcome: str, err: UpstreamError | None) -> None:
        """Called once per attempt (from Attempt.report): health follows the outcome."""
        if err is not None:
            if self.health.failed(attempt.target, err):
                self.hub.emit(HealthEvent(attempt.target.provider, "down", err.message))
        elif outcome in ("ok", "budget_cut") and attempt.usage is not None and attempt.generation_s is not None:
            self.health.finished(attempt.target, attempt.usage.completion_tokens, attempt.generation_s)
        else:
            self.health.release(attempt.target)
