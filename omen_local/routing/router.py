"""The router: plan the candidates for a request, then drive them with failover.

Strategy ``single``: one candidate at a time. A connect error, timeout, 429 or 5xx
before the first token moves on to the next candidate; once content has reached the
client, a failure ends the stream with an error event (the server's job). Every
upstream attempt, failed or cancelled too, is reported to the hub as a UsageEvent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from .. import estimate
from ..api.request import ChatRequest
from ..config import Config
from ..errors import OmenError
from ..observe import HealthEvent, Hub, UsageEvent
from ..providers.base import Chunk, Completion, Provider, UpstreamError, Usage
from ..tokens import Identity
from .catalog import Catalog, Target
from .health import HealthBook

IMPLEMENTED_STRATEGIES = ("single",)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    identity: Identity
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    strategy: str
    intent: str | None
    targets: list[Target]


class Router:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        catalog: Catalog,
        health: HealthBook,
        hub: Hub,
    ) -> None:
        self.config = config
        self.providers = providers
        self.catalog = catalog
        self.health = health
        self.hub = hub

    # ------------------------------------------------------------ planning

    def plan(self, req: ChatRequest) -> Plan:
        """Candidates in order: explicit model or intent bucket, then allowlist, usability, health."""
        hints = req.hints
        strategy = hints.strategy or self.config.defaults.strategy
        if strategy not in IMPLEMENTED_STRATEGIES:
            raise OmenError(
                400,
                f"strategy '{strategy}' is not available in this version of OMEN (available: "
                + ", ".join(IMPLEMENTED_STRATEGIES)
                + ")",
                code="strategy_unavailable",
                param="omen.strategy",
            )
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
        reasons: list[str] = []
        usable = []
        for t in targets:
            why = self.catalog.usable(t.provider)
            if why is None:
                usable.append(t)
            else:
                reasons.append(f"{t.provider}: {why}")
        healthy = [t for t in usable if self.health.available(t.provider)]
        if not healthy:
            if usable:
                wait = min(self.health.retry_in(t.provider) for t in usable)
                errors = "; ".join(
                    f"{t.provider}: {self.health.get(t.provider).last_error}" for t in usable[:3]
                )
                raise OmenError(
                    503,
                    f"no provider is available right now ({errors})",
                    code="no_provider_available",
                    retry_after=wait,
                )
            detail = "; ".join(dict.fromkeys(reasons)) or "no candidates are configured for it"
            what = f"intent '{intent}'" if intent else f"model '{req.model}'"
            raise OmenError(503, f"no provider can serve {what}: {detail}", code="no_provider_available")
        return Plan(strategy=strategy, intent=intent, targets=healthy)

    # ------------------------------------------------------------ metering

    def _report(
        self,
        ctx: RequestContext,
        req: ChatRequest,
        plan: Plan,
        target: Target,
        *,
        outcome: str,
        usage: Usage | None,
        t0: float,
        ttft: float | None,
        error: str | None = None,
        output_chars: int = 0,
    ) -> None:
        estimated = usage is None
        if usage is None:
            usage = Usage(
                prompt_tokens=estimate.prompt_tokens(req.body),
                completion_tokens=(output_chars + 3) // 4,
            )
        price = self.config.price_for(target.provider, target.model)
        self.hub.emit(
            UsageEvent(
                request_id=ctx.request_id,
                user=ctx.identity.user,
                workspace=req.hints.workspace or ctx.identity.workspace,
                client=ctx.client,
                session=req.hints.session,
                provider=target.provider,
                model=target.model,
                strategy=plan.strategy,
                usage=usage,
                cost_usd=usage.cost(price),
                ttft_ms=None if ttft is None else (ttft - t0) * 1000,
                total_ms=(time.perf_counter() - t0) * 1000,
                outcome=outcome,
                estimated=estimated,
                error=error,
            )
        )

    def _failed(self, err: UpstreamError) -> None:
        if self.health.failed(err):
            self.hub.emit(HealthEvent(err.provider, "down", err.message))

    def _succeeded(self, provider: str, latency_ms: float) -> None:
        if self.health.ok(provider, latency_ms):
            self.hub.emit(HealthEvent(provider, "up"))

    # ------------------------------------------------------------ execution

    def _live(self, plan: Plan) -> Iterator[Target]:
        """The plan's targets, skipping providers that went down during this request."""
        for i, target in enumerate(plan.targets):
            if i == 0 or self.health.available(target.provider):
                yield target

    async def complete(self, req: ChatRequest, ctx: RequestContext) -> tuple[Plan, Target, Completion]:
        plan = self.plan(req)
        errors: list[UpstreamError] = []
        for target in self._live(plan):
            t0 = time.perf_counter()
            try:
                done = await self.providers[target.provider].complete(target.model, req.body)
            except UpstreamError as err:
                self._failed(err)
                self._report(ctx, req, plan, target, outcome="error", usage=Usage(), t0=t0, ttft=None, error=err.message)
                errors.append(err)
                if not err.retryable:
                    break
                continue
            except asyncio.CancelledError:
                self._report(ctx, req, plan, target, outcome="cancelled", usage=None, t0=t0, ttft=None)
                raise
            now = time.perf_counter()
            self._succeeded(target.provider, (now - t0) * 1000)
            self._report(ctx, req, plan, target, outcome="ok", usage=done.usage, t0=t0, ttft=now)
            return plan, target, done
        raise final_error(errors)

    async def open_stream(self, req: ChatRequest, ctx: RequestContext) -> StreamSession:
        """Find the first candidate that produces content; return its stream, unread parts buffered."""
        plan = self.plan(req)
        errors: list[UpstreamError] = []
        first_token = self.config.defaults.first_token_timeout_s
        for target in self._live(plan):
            t0 = time.perf_counter()
            agen = self.providers[target.provider].stream(target.model, req.body)
            session = StreamSession(self, ctx, req, plan, target, agen, t0)
            try:
                async with asyncio.timeout(first_token):
                    await session.prime()
            except (UpstreamError, TimeoutError) as exc:
                err = (
                    exc
                    if isinstance(exc, UpstreamError)
                    else UpstreamError(target.provider, "timeout", f"{target.provider} sent no token within {first_token:g}s")
                )
                await session.finish("error", err.message)
                self._failed(err)
                errors.append(err)
                if not err.retryable:
                    break
                continue
            except asyncio.CancelledError:
                await session.finish("cancelled")
                raise
            self._succeeded(target.provider, (time.perf_counter() - t0) * 1000)
            return session
        raise final_error(errors)


class StreamSession:
    """A started upstream stream: buffered first chunks, the rest, and its accounting."""

    def __init__(
        self,
        router: Router,
        ctx: RequestContext,
        req: ChatRequest,
        plan: Plan,
        target: Target,
        agen: AsyncIterator[Chunk],
        t0: float,
    ) -> None:
        self.router, self.ctx, self.req, self.plan, self.target = router, ctx, req, plan, target
        self._agen = agen
        self._t0 = t0
        self._buffer: list[Chunk] = []
        self._exhausted = False
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.output_chars = 0
        self._finished = False

    async def prime(self) -> None:
        """Read until the first content (or the end), keeping what was read."""
        while True:
            try:
                chunk = await anext(self._agen)
            except StopAsyncIteration:
                self._exhausted = True
                return
            self._buffer.append(chunk)
            if chunk.has_content or chunk.finish_reason is not None:
                self.ttft = time.perf_counter()
                return

    def _account(self, chunk: Chunk) -> None:
        content = chunk.delta.get("content")
        if content:
            self.output_chars += len(content)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        for chunk in self._buffer:
            self._account(chunk)
            yield chunk
        self._buffer.clear()
        if self._exhausted:
            return
        async for chunk in self._agen:
            self._account(chunk)
            yield chunk

    async def finish(self, outcome: str, error: str | None = None) -> None:
        """Close the upstream (at once, if unfinished) and report this attempt, exactly once."""
        if self._finished:
            return
        self._finished = True
        aclose = getattr(self._agen, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing a failed upstream must not hide the first error
                pass
        usage = self.usage
        if usage is not None and outcome != "ok" and usage.completion_tokens == 0 and self.output_chars:
            usage = None  # partial stream: the prompt count alone would undercount
        self.router._report(
            self.ctx,
            self.req,
            self.plan,
            self.target,
            outcome=outcome,
            usage=usage,
            t0=self._t0,
            ttft=self.ttft,
            error=error,
            output_chars=self.output_chars,
        )


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
    if all(e.kind == "unsupported" for e in errors):
        return OmenError(400, f"no provider can take this request: {summary}", code="unsupported_request")
    if all(e.kind == "http" and e.status == 429 for e in errors):
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
