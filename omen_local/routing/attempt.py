"""One upstream attempt: dispatch to one target, watch it, report it exactly once.

An attempt owns the provider's stream iterator; closing the attempt closes the
upstream connection at once. Its :class:`~omen_local.observe.UsageEvent` carries the
provider's usage or, where a stream was cut before the provider reported any, an
offline estimate marked ``estimated``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import estimate
from ..config import Price
from ..observe import PROGRESS_CHARS, AttemptProgress, AttemptStarted, UsageEvent
from ..providers.base import Chunk, Completion, Provider, UpstreamError, Usage
from .catalog import Target

if TYPE_CHECKING:
    from .router import Plan, RequestContext, Router


class Attempt:
    def __init__(
        self,
        router: Router,
        ctx: RequestContext,
        plan: Plan,
        target: Target,
        body: dict[str, Any],
    ) -> None:
        self.router, self.ctx, self.plan, self.target, self.body = router, ctx, plan, target, body
        self.provider: Provider = router.providers[target.provider]
        self.price: Price = router.config.price_for(target.provider, target.model)
        self.t0 = time.perf_counter()
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.output_chars = 0
        self._agen: AsyncIterator[Chunk] | None = None
        self._buffer: list[Chunk] = []
        self._exhausted = False
        self._reported = False
        self.whole = False  # the upstream finished its answer
        self.outcome: str | None = None
        self.cost_usd = 0.0
        self.ended: float | None = None
        self._progress_at: int | None = None  # output_chars due for the next AttemptProgress, once announced
        self.prompt_estimate = estimate.prompt_tokens(body)
        self.id = f"{ctx.request_id}.{ctx.attempts}"
        ctx.attempts += 1

    @property
    def generation_s(self) -> float | None:
        """Seconds from the first token to the end (for tokens per second)."""
        if self.ttft is None or self.ended is None:
            return None
        return self.ended - self.ttft

    @property
    def latency_ms(self) -> float:
        """Time to the first token (streams) or to the whole answer."""
        return ((self.ttft or time.perf_counter()) - self.t0) * 1000

    # ------------------------------------------------------------ non-streamed

    def _bad_answer(self, exc: Exception) -> UpstreamError:
        """An adapter tripped over data it did not expect: a protocol error, never a 500."""
        return UpstreamError(
            self.target.provider,
            "protocol",
            self.provider.redact(f"{self.target} sent an answer OMEN cannot read ({type(exc).__name__}: {exc})"),
        )

    async def complete(self) -> Completion:
        try:
            done = await self.provider.complete(self.target.model, self.body)
        except UpstreamError:
            raise
        except Exception as exc:
            raise self._bad_answer(exc) from exc
        self.ttft = time.perf_counter()
        self.usage = done.usage
        self.whole = True
        choices = done.body.get("choices") or [{}]
        self.finish_reason = choices[0].get("finish_reason")
        return done

    # ------------------------------------------------------------ streamed

    async def open(self) -> None:
        """Start the stream and read until the first content (or its end), keeping what was read.

        Nothing has reached the client yet, so a stream that breaks here is a failure like any
        other before the first token (retryable), not a mid-stream one.
        """
        self._agen = self.provider.stream(self.target.model, self.body)
        while True:
            try:
                chunk = await anext(self._agen)
            except StopAsyncIteration:
                self._exhausted = True
                self.ttft = time.perf_counter()
                return
            except UpstreamError as err:
                if err.kind == "midstream":
                    err.kind = "protocol"
                raise
            except Exception as exc:
                raise self._bad_answer(exc) from exc
            self._buffer.append(chunk)
            if chunk.has_content or chunk.finish_reason is not None:
                self.ttft = time.perf_counter()
                return

    def _account(self, chunk: Chunk) -> None:
        content = chunk.delta.get("content")
        if content:
            self.output_chars += len(content)
        for call in chunk.delta.get("tool_calls") or ():
            args = (call.get("function") or {}).get("arguments")
            if args:
                self.output_chars += len(args)
        if self._progress_at is not None and self.output_chars >= self._progress_at:
            self._progress_at = self.output_chars + PROGRESS_CHARS
            self.router.hub.emit(AttemptProgress(self.id, self.output_chars))
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.whole = True

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The buffered chunks, then the rest of the stream; raises UpstreamError mid-stream."""
        assert self._agen is not None, "open() first"
        buffered, self._buffer = self._buffer, []
        for chunk in buffered:
            self._account(chunk)
            yield chunk
        if self._exhausted:
            return
        while True:
            try:
                chunk = await anext(self._agen)
            except StopAsyncIteration:
                return
            except UpstreamError:
                raise
            except Exception as exc:
                raise self._bad_answer(exc) from exc
            self._account(chunk)
            yield chunk

    def announce(self) -> None:
        """Tell the hub this stream is reaching the client (before the first byte is sent)."""
        self._progress_at = self.output_chars + PROGRESS_CHARS
        self.router.hub.emit(AttemptStarted(**self._who(), prompt_tokens=self.prompt_estimate))

    def _who(self) -> dict[str, Any]:
        """The fields that name this attempt in every event about it."""
        ctx = self.ctx
        return {
            "attempt_id": self.id,
            "request_id": ctx.request_id,
            "user": ctx.identity.user,
            "workspace": ctx.workspace,
            "client": ctx.client,
            "session": ctx.session,
            "provider": self.target.provider,
            "model": self.target.model,
            "strategy": self.plan.strategy,
        }

    def spent_estimate(self) -> float:
        """USD spent so far by this attempt, from reported usage or the characters seen."""
        if self.usage is not None and self.usage.completion_tokens:
            return self.usage.cost(self.price)
        return Usage(self.prompt_estimate, (self.output_chars + 3) // 4).cost(self.price)

    # ------------------------------------------------------------ end

    async def close(self, outcome: str, err: UpstreamError | None = None) -> None:
        """Close the upstream (at once, if unfinished) and report this attempt, exactly once."""
        if self._reported:
            return
        self._reported = True
        aclose = getattr(self._agen, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing a failed upstream must not hide the first error
                pass
        self.report(outcome, err)

    def report(self, outcome: str, err: UpstreamError | None = None) -> None:
        """Publish this attempt's UsageEvent and update health. A whole answer that was not
        used (a race tie, a speculation that lost) still counts as ``ok``: it was paid for."""
        self._reported = True
        self.ended = time.perf_counter()
        if outcome == "cancelled" and self.whole:
            outcome = "ok"
        usage = self.usage
        if usage is not None and outcome != "ok" and usage.completion_tokens == 0 and self.output_chars:
            usage = None  # a cut stream: the prompt count alone would undercount
        if usage is None and err is not None and not self.output_chars and err.kind in ("connect", "http", "limit", "unsupported"):
            usage = Usage()  # refused before any work (an error status, no connection): providers bill nothing
        estimated = usage is None
        if usage is None:
            usage = Usage(self.prompt_estimate, (self.output_chars + 3) // 4)
        cost = usage.cost(self.price)
        self.outcome, self.cost_usd = outcome, cost
        ctx = self.ctx
        ctx.spent_usd += cost
        ctx.spent_tokens += usage.prompt_tokens + usage.completion_tokens
        self.router.hub.emit(
            UsageEvent(
                **self._who(),
                usage=usage,
                cost_usd=cost,
                ttft_ms=None if self.ttft is None else (self.ttft - self.t0) * 1000,
                total_ms=(time.perf_counter() - self.t0) * 1000,
                outcome=outcome,
                estimated=estimated,
                error=None if err is None else err.message,
                intent=self.plan.intent,
            )
        )
        self.router.attempt_ended(self, outcome, err)
