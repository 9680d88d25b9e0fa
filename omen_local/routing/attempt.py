"""One upstream attempt: dispatch to one target, watch it, report it exactly once.

An attempt owns the provider's stream iterator; closing the attempt closes the upstream
connection at once. It knows nothing of the router: it hands its records to the
:class:`Reporter` it was made with (the dispatcher), which passes the usage to the sink
and the verdict to health. Its :class:`~omen_local.observe.UsageEvent` carries the
provider's usage or, where the provider reported none, an offline estimate marked
``estimated``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..api.request import Operation
from ..caller import Caller
from ..config import Price
from ..observe import PROGRESS_CHARS, AttemptProgress, AttemptStarted, Outcome, Record, UsageEvent
from ..providers.base import Batch, Chunk, Completion, Embeddings, Provider, Usage
from ..providers.errors import ProtocolError, StreamBroken, UpstreamError
from .catalog import Target


def output_chars(delta: dict[str, Any]) -> int:
    """Characters of output in a delta: content and tool-call arguments (what estimates count)."""
    chars = 0
    content = delta.get("content")
    if content:
        chars = len(content)
    calls = delta.get("tool_calls")
    if calls:
        for call in calls:
            args = (call.get("function") or {}).get("arguments")
            if args:
                chars += len(args)
    return chars


class Reporter(Protocol):
    def record(self, record: Record) -> None:
        """Hand a record to the usage sink (journal, store, quotas), then to observers."""

    def ended(self, attempt: Attempt, outcome: Outcome, err: UpstreamError | None) -> None:
        """The attempt is over: health follows its outcome."""


class Attempt:
    def __init__(
        self,
        attempt_id: str,
        caller: Caller,
        strategy: str,
        target: Target,
        provider: Provider,
        price: Price,
        body: dict[str, Any],
        prompt_estimate: int,
        reporter: Reporter,
        op: Operation = Operation.CHAT,
        intent: str | None = None,
    ) -> None:
        self.id, self.caller, self.strategy = attempt_id, caller, strategy
        self.intent = intent  # the bucket the plan used, reported with the usage (the tray's table)
        self.target, self.provider, self.price, self.body = target, provider, price, body
        # Decided once, from this attempt's own provider: a reload mid-stream cannot split its records.
        self.relayed = provider.meters_upstream
        self.prompt_estimate = prompt_estimate
        self._reporter = reporter
        self.op = op
        self.t0 = time.perf_counter()
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.output_chars = 0
        self._agen: AsyncIterator[Batch] | None = None
        self._buffer: list[Batch] = []
        self._exhausted = False
        self._reported = False
        self.whole = False  # the upstream finished its answer
        self.outcome: Outcome | None = None
        self.cost_usd = 0.0
        self.ended: float | None = None
        self.estimated = False
        self.streamed = False
        self._progress_at: int | None = None  # output_chars due for the next AttemptProgress, once announced

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

    def _unreadable(self, exc: Exception) -> ProtocolError:
        """An adapter tripped over data it did not expect: a protocol error, never a 500."""
        return ProtocolError(
            self.target.provider,
            self.provider.redact(f"{self.target} sent an answer OMEN cannot read ({type(exc).__name__}: {exc})"),
        )

    @staticmethod
    def _before_client(err: UpstreamError) -> UpstreamError:
        """A stream that broke before anything reached the client is an ordinary failure
        (another candidate may be tried), not a mid-stream one."""
        if isinstance(err, StreamBroken):
            return ProtocolError(err.provider, err.message, status=err.status, retry_after=err.retry_after)
        return err

    # ------------------------------------------------------------ non-streamed

    async def _call(self) -> Completion | Embeddings:
        model, body = self.target.model, self.body
        if self.op is Operation.EMBED:
            return await self.provider.embed(model, body)
        if self.op is Operation.TEXT:
            return await self.provider.complete_text(model, body)
        return await self.provider.complete(model, body)

    async def complete(self) -> Completion | Embeddings:
        """A whole answer (chat or text completion), or the vectors of an embeddings request."""
        try:
            done = await self._call()
        except UpstreamError as err:
            raise self._before_client(err) from None
        except Exception as exc:
            raise self._unreadable(exc) from exc
        self.ttft = time.perf_counter()
        self.usage = done.usage
        self.whole = True
        if isinstance(done, Completion):
            choices = done.body.get("choices") or [{}]
            self.finish_reason = choices[0].get("finish_reason")
        return done

    # ------------------------------------------------------------ streamed

    async def open(self) -> None:
        """Start the stream and read until the first content (or its end), keeping what was read."""
        self.streamed = True
        self._agen = self.provider.stream_batches(self.target.model, self.body, text=self.op is Operation.TEXT)
        while True:
            try:
                batch = await anext(self._agen)
            except StopAsyncIteration:
                self._exhausted = True
                self.ttft = time.perf_counter()
                return
            except UpstreamError as err:
                raise self._before_client(err) from None
            except Exception as exc:
                raise self._unreadable(exc) from exc
            self._buffer.append(batch)
            for chunk in batch:
                if chunk.finish_reason is not None or chunk.has_content:
                    self.ttft = time.perf_counter()
                    return

    def _account(self, batch: Batch) -> None:
        """Characters, usage and finish of a read, before the client gets it (a progress
        note, if due, is journaled first: a crash then charges what was shown)."""
        chars = self.output_chars
        for chunk in batch:
            delta = chunk.delta
            if delta:
                content = delta.get("content")
                if len(delta) == 1 and type(content) is str:  # most chunks: text, nothing else
                    chars += len(content)
                else:
                    chars += output_chars(delta)
            if chunk.usage is not None:
                self.usage = chunk.usage
            if chunk.finish_reason is not None:
                self.finish_reason = chunk.finish_reason
                self.whole = True
        self.output_chars = chars
        if self._progress_at is not None and chars >= self._progress_at:
            self._progress_at = chars + PROGRESS_CHARS
            self._reporter.record(AttemptProgress(self.id, chars, relayed=self.relayed))

    def account_chunk(self, chunk: Chunk) -> None:
        """:meth:`_account` for one chunk (a budgeted stream checks its spend after each)."""
        self._account(Batch((chunk,)))

    async def batches(self, *, account: bool = True) -> AsyncIterator[Batch]:
        """The buffered reads, then the rest of the stream, a read at a time; raises
        UpstreamError mid-stream. Each read is accounted (characters, usage, finish) before
        it is handed on, unless ``account`` is False (the caller calls :meth:`account_chunk`)."""
        assert self._agen is not None, "open() first"
        buffered, self._buffer = self._buffer, []
        for batch in buffered:
            if account:
                self._account(batch)
            yield batch
        if self._exhausted:
            return
        agen = self._agen
        while True:
            try:
                batch = await anext(agen)
            except StopAsyncIteration:
                return
            except UpstreamError:
                raise
            except Exception as exc:
                raise self._unreadable(exc) from exc
            if account:
                self._account(batch)
            yield batch

    def announce(self) -> None:
        """Record that this stream is reaching the client (before the first byte is sent)."""
        self._progress_at = self.output_chars + PROGRESS_CHARS
        self._reporter.record(AttemptStarted(**self._who(), prompt_tokens=self.prompt_estimate))

    def _who(self) -> dict[str, Any]:
        """The fields that name this attempt in every record about it."""
        c = self.caller
        return {
            "attempt_id": self.id,
            "request_id": c.request_id,
            "user": c.user,
            "workspace": c.workspace,
            "client": c.client,
            "session": c.session,
            "provider": self.target.provider,
            "model": self.target.model,
            "strategy": self.strategy,
            "relayed": self.relayed,
        }

    def usage_so_far(self) -> Usage:
        """Reported usage, or an estimate from the prompt and the characters seen."""
        if self.usage is not None and self.usage.completion_tokens:
            return self.usage
        return Usage(self.usage.prompt_tokens if self.usage else self.prompt_estimate, (self.output_chars + 3) // 4)

    def spent_estimate(self) -> float:
        """USD spent so far by this attempt."""
        return self.usage_so_far().cost(self.price)

    # ------------------------------------------------------------ end

    async def close(self, outcome: Outcome, err: UpstreamError | None = None) -> None:
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

    def report(self, outcome: Outcome, err: UpstreamError | None = None) -> None:
        """Record this attempt's UsageEvent and hand the verdict to health.

        A whole answer that was not used (a race tie, a speculation that lost) still counts
        as ``ok``: it was paid for.
        """
        self._reported = True
        self.ended = time.perf_counter()
        if outcome is Outcome.CANCELLED and self.whole:
            outcome = Outcome.OK
        usage = self.usage
        if usage is not None and outcome is not Outcome.OK and usage.completion_tokens == 0 and self.output_chars:
            usage = None  # a cut stream: the prompt count alone would undercount
        if usage is None and err is not None and not self.output_chars and not err.billed:
            usage = Usage()  # refused before any work: providers bill nothing
        self.estimated = usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0 and self.whole)
        if self.estimated:
            usage = self.usage_so_far()
        assert usage is not None
        self.usage = usage
        self.cost_usd = usage.cost(self.price)
        self.outcome = outcome
        self._reporter.record(
            UsageEvent(
                **self._who(),
                usage=usage,
                cost_usd=self.cost_usd,
                ttft_ms=None if self.ttft is None else (self.ttft - self.t0) * 1000,
                total_ms=(self.ended - self.t0) * 1000,
                outcome=outcome,
                estimated=self.estimated,
                error=None if err is None else err.message,
                intent=self.intent,
                asked=self.caller.asked,
                instance=self.caller.instance,
            )
        )
        self._reporter.ended(self, outcome, err)
