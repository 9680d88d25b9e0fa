"""The router: plan the candidates for a request, admit it, then drive the candidates.

Strategy ``single``: one candidate at a time. A connect error, timeout, 429 or 5xx
before the first token moves on to the next candidate; once content has reached the
client, a failure ends the stream with an error event (the server's job). Every
upstream attempt, failed or cancelled too, is reported as a UsageEvent (attempt.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from .. import estimate
from ..api.request import ChatRequest
from ..config import Config
from ..errors import OmenError
from ..observe import HealthEvent, Hub
from ..policy import CostBound, NoPolicy, Policy
from ..providers.base import Chunk, Completion, Provider, UpstreamError
from ..tokens import Identity
from . import budget as budgets
from .attempt import Attempt
from .catalog import Catalog, Target
from .health import HealthBook

IMPLEMENTED_STRATEGIES = ("single",)


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
    targets: list[Target]
    bound: CostBound
    budget_usd: float | None = None


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

    # ------------------------------------------------------------ planning

    def _candidates(self, req: ChatRequest) -> tuple[str | None, list[Target]]:
        """Explicit model or intent bucket, then the allowlist."""
        hints = req.hints
        intent: str | None = None
        if req.model == "auto":
            intent = hints.intent or self.config.defaults.intent
            targets = self.catalog.for_intent(intent)
        else:
            targets = self.catalog.resolve(req.model)
        if hints.providers is not None:
            allowed = [t for t in targets if t.provider in hints.providers]
            if not allowed and targets:
                raise OmenError(
                    400,
                    f"no candidate for '{req.model}' is served by the allowed providers "
                    f"({', '.join(hints.providers)})",
                    code="no_allowed_provider",
                    param="omen.providers",
                )
            targets = allowed
        return intent, targets

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
        healthy = [t for t in usable if self.health.available(t.provider)]
        if healthy:
            return healthy
        if usable:
            wait = min(self.health.retry_in(t.provider) for t in usable)
            errors = "; ".join(f"{t.provider}: {self.health.get(t.provider).last_error}" for t in usable[:3])
            raise OmenError(
                503, f"no provider is available right now ({errors})", code="no_provider_available", retry_after=wait
            )
        detail = "; ".join(dict.fromkeys(reasons)) or "no candidates are configured for it"
        what = f"intent '{intent}'" if intent else f"model '{req.model}'"
        raise OmenError(503, f"no provider can serve {what}: {detail}", code="no_provider_available")

    def plan(self, req: ChatRequest) -> Plan:
        """Candidates in order, filtered by allowlist, usability, health and budget."""
        strategy = req.hints.strategy or self.config.defaults.strategy
        if strategy not in IMPLEMENTED_STRATEGIES:
            raise OmenError(
                400,
                f"strategy '{strategy}' is not available in this version of OMEN (available: "
                + ", ".join(IMPLEMENTED_STRATEGIES)
                + ")",
                code="strategy_unavailable",
                param="omen.strategy",
            )
        intent, targets = self._candidates(req)
        targets = self._available(req, intent, targets)

        prompt = estimate.prompt_tokens(req.body)
        cap = budgets.requested_output_cap(req.body) or self.config.defaults.assumed_output_tokens
        budget = req.hints.budget_usd if req.hints.budget_usd is not None else self.config.defaults.budget_usd
        worst: dict[Target, float] = {
            t: budgets.worst_cost(self.config.price_for(t.provider, t.model), prompt, cap) for t in targets
        }
        if budget is not None:
            fits = [
                t
                for t in targets
                if budgets.affordable_output(self.config.price_for(t.provider, t.model), prompt, budget) != 0
            ]
            if not fits:
                cheapest = min(targets, key=lambda t: worst[t])
                raise OmenError(
                    402,
                    f"omen.budget_usd {budget:g} does not cover the prompt (about {prompt} tokens) on any "
                    f"candidate; the cheapest, {cheapest}, needs more",
                    code="budget_exceeded",
                    param="omen.budget_usd",
                )
            targets = fits
        bound = CostBound(prompt, cap, max(worst[t] for t in targets))
        return Plan(strategy=strategy, intent=intent, targets=targets, bound=bound, budget_usd=budget)

    def body_for(self, req: ChatRequest, plan: Plan, target: Target) -> dict[str, Any]:
        """The body sent to ``target``: the request's, with the output capped to what the budget buys."""
        if plan.budget_usd is None:
            return req.body
        price = self.config.price_for(target.provider, target.model)
        cap = budgets.affordable_output(price, plan.bound.prompt_tokens, plan.budget_usd)
        return req.body if cap is None else budgets.with_output_cap(req.body, max(1, cap))

    # ------------------------------------------------------------ policy

    async def admit(self, ctx: RequestContext, req: ChatRequest, plan: Plan) -> None:
        await self.policy.admit(ctx, req, plan.bound)
        ctx.admitted = True

    def settle(self, ctx: RequestContext) -> None:
        if ctx.admitted:
            ctx.admitted = False
            self.policy.settle(ctx)

    # ------------------------------------------------------------ health

    def _failed(self, err: UpstreamError) -> None:
        if self.health.failed(err):
            self.hub.emit(HealthEvent(err.provider, "down", err.message))

    def _succeeded(self, provider: str, latency_ms: float) -> None:
        if self.health.ok(provider, latency_ms):
            self.hub.emit(HealthEvent(provider, "up"))

    def _live(self, plan: Plan, errors: list[UpstreamError]) -> Iterator[Target]:
        """The plan's targets, skipping providers that went down or are over OMEN's limits."""
        for i, target in enumerate(plan.targets):
            if i > 0 and not self.health.available(target.provider):
                continue
            wait = self.policy.provider_wait(target.provider)
            if wait > 0:
                errors.append(
                    UpstreamError(
                        target.provider,
                        "limit",
                        f"{target.provider} is at its configured rate limit",
                        status=429,
                        retry_after=wait,
                    )
                )
                continue
            yield target

    # ------------------------------------------------------------ execution

    async def complete(self, req: ChatRequest, ctx: RequestContext) -> tuple[Plan, Target, Completion]:
        plan = self.plan(req)
        await self.admit(ctx, req, plan)
        try:
            errors: list[UpstreamError] = []
            for target in self._live(plan, errors):
                attempt = Attempt(self, ctx, plan, target, self.body_for(req, plan, target))
                try:
                    done = await attempt.complete()
                except UpstreamError as err:
                    self._failed(err)
                    attempt.report("error", err.message)
                    errors.append(err)
                    if not err.retryable:
                        break
                    continue
                except asyncio.CancelledError:
                    attempt.report("cancelled")
                    raise
                self._succeeded(target.provider, attempt.latency_ms)
                attempt.report("ok")
                return plan, target, done
            raise final_error(errors)
        finally:
            self.settle(ctx)

    async def open_stream(self, req: ChatRequest, ctx: RequestContext) -> StreamSession:
        """Find the first candidate that produces content; return the response stream."""
        plan = self.plan(req)
        await self.admit(ctx, req, plan)
        try:
            errors: list[UpstreamError] = []
            first_token = self.config.defaults.first_token_timeout_s
            for target in self._live(plan, errors):
                attempt = Attempt(self, ctx, plan, target, self.body_for(req, plan, target))
                try:
                    async with asyncio.timeout(first_token):
                        await attempt.open()
                except (UpstreamError, TimeoutError) as exc:
                    err = (
                        exc
                        if isinstance(exc, UpstreamError)
                        else UpstreamError(
                            target.provider, "timeout", f"{target.provider} sent no token within {first_token:g}s"
                        )
                    )
                    await attempt.close("error", err.message)
                    self._failed(err)
                    errors.append(err)
                    if not err.retryable:
                        break
                    continue
                except asyncio.CancelledError:
                    await attempt.close("cancelled")
                    raise
                self._succeeded(target.provider, attempt.latency_ms)
                attempt.announce()
                return StreamSession(self, ctx, req, plan, attempt)
            raise final_error(errors)
        except BaseException:
            self.settle(ctx)
            raise


class StreamSession:
    """The response stream the client sees: the winning attempt, within the budget."""

    def __init__(self, router: Router, ctx: RequestContext, req: ChatRequest, plan: Plan, attempt: Attempt) -> None:
        self.router, self.ctx, self.req, self.plan = router, ctx, req, plan
        self.attempt = attempt
        self.budget_cut = False

    @property
    def target(self) -> Target:
        return self.attempt.target

    @property
    def usage(self) -> Any:
        return self.attempt.usage

    @property
    def output_chars(self) -> int:
        return self.attempt.output_chars

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        budget = self.plan.budget_usd
        spent_before = self.ctx.spent_usd
        async for chunk in self.attempt.chunks():
            if budget is not None and chunk.finish_reason is None and chunk.has_content:
                spent = spent_before + self.attempt.spent_estimate()
                if spent >= budget:
                    yield chunk
                    self.budget_cut = True
                    yield Chunk(
                        finish_reason="length",
                        omen={"budget_cut": {"budget_usd": budget, "spent_usd": round(spent, 8)}},
                    )
                    return
            yield chunk

    async def finish(self, outcome: str, error: str | None = None) -> None:
        """Close the upstream and report; settle the request's quota reservation."""
        if outcome == "ok" and self.budget_cut:
            outcome = "budget_cut"
        try:
            await self.attempt.close(outcome, error)
        finally:
            self.router.settle(self.ctx)


def final_error(errors: list[UpstreamError]) -> OmenError:
    """One client-facing error for a request whose candidates all failed."""
    if not errors:
        return OmenError(503, "no provider is available", code="no_provider_available")
    summary = "; ".join(e.message for e in errors)
    last = errors[-1]
    if not last.retryable:
        status = last.status or 502
        if last.kind == "unsupported" or status in (400, 413, 422):
            return OmenError(400, last.message, code="upstream_rejected")
        return OmenError(502, f"upstream error: {summary}", code="upstream_error")
    if all(e.kind == "limit" for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return OmenError(
            429, f"rate limited: {summary}", code="rate_limited", retry_after=min(waits) if waits else None
        )
    if all(e.kind == "unsupported" for e in errors):
        return OmenError(400, f"no provider can take this request: {summary}", code="unsupported_request")
    if all(e.status == 429 for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return OmenError(
            429,
            f"every provider is rate limiting: {summary}",
            code="upstream_rate_limited",
            retry_after=min(waits) if waits else None,
        )
    if all(e.kind == "http" and e.status == 404 for e in errors):
        return OmenError(404, f"model not found upstream: {summary}", code="model_not_found", param="model")
    if last.kind == "timeout":
        return OmenError(504, f"upstream timed out: {summary}", code="upstream_timeout")
    if all(e.kind == "connect" for e in errors):
        return OmenError(503, f"no provider is reachable: {summary}", code="no_provider_available")
    return OmenError(502, f"upstream error: {summary}", code="upstream_error")
