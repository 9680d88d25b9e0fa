"""Response streams: what the client reads, whichever attempts feed it.

:class:`StreamSession` streams one attempt and enforces the request's budget;
:class:`SpeculativeSession` streams the fast attempt and may swap to a preferred one
mid-flight; :class:`CompletedSession` streams an answer that is already whole (the
merged answer of ``parallel_merge``). A session knows its request (``Call``) and its
attempts, nothing else: whoever started the request sets ``on_end`` to hear how it ended.

Sessions hand on what the upstream sent a network read at a time (:meth:`StreamSession.batches`,
one :class:`~omen_local.providers.base.Batch` per read), so the server writes a read's
frames with one write and the chunks of a read cross the layers together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..observe import Outcome
from ..providers.base import Batch, Chunk, Completion, Usage
from ..providers.errors import UpstreamError
from .attempt import Attempt
from .catalog import Target

if TYPE_CHECKING:
    from .dispatch import Call


def _nothing(served: Target | None) -> None:
    return None


class StreamSession:
    """One attempt's stream, cut with ``finish_reason: "length"`` when the budget is spent."""

    def __init__(self, call: Call, attempt: Attempt) -> None:
        self.call = call
        self.plan = call.plan
        self.attempt = attempt
        self.budget_cut = False
        self.on_end: Callable[[Target | None], None] = _nothing  # the request's end (set by the router)

    @property
    def target(self) -> Target:
        return self.attempt.target

    @property
    def usage(self) -> Usage | None:
        """What the upstream reported, or None (the caller must estimate, and say so)."""
        return self.attempt.usage

    def usage_or_estimate(self) -> tuple[Usage, bool]:
        """(usage, estimated): the upstream's count, else an estimate from the prompt and the output seen."""
        usage = self.attempt.usage
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return usage, False
        return self.attempt.usage_so_far(), True

    @property
    def prompt_estimate(self) -> int:
        return self.attempt.prompt_estimate

    @property
    def output_chars(self) -> int:
        return self.attempt.output_chars

    async def _budgeted(self, attempt: Attempt) -> AsyncIterator[Batch]:
        budget = self.plan.budget_usd
        if budget is None:
            async for batch in attempt.batches():
                yield batch
            return
        spent_before = self.call.spent_usd
        async for batch in attempt.batches(account=False):
            for i, chunk in enumerate(batch):
                attempt.account_chunk(chunk)  # chunk by chunk: the cut falls where the budget ran out
                if chunk.finish_reason is None and chunk.has_content:
                    spent = spent_before + attempt.spent_estimate()
                    if spent > budget:
                        self.budget_cut = True
                        cut = Batch(batch[: i + 1], last=True)
                        cut.append(
                            Chunk(
                                finish_reason="length",
                                omen={"budget_cut": {"budget_usd": budget, "spent_usd": round(spent, 8)}},
                            )
                        )
                        yield cut
                        return
            yield batch

    def batches(self) -> AsyncIterator[Batch]:
        """What the client gets, a read at a time (the attempt's own reads when no budget
        watches the stream: one generator less per read)."""
        if self.plan.budget_usd is None:
            return self.attempt.batches()
        return self._budgeted(self.attempt)

    async def finish(self, outcome: Outcome, err: UpstreamError | None = None) -> None:
        """Close the upstream(s) and report; then the request ends (quota hold released)."""
        if outcome is Outcome.OK and self.budget_cut:
            outcome = Outcome.BUDGET_CUT
        try:
            await self.attempt.close(outcome, err)
        finally:
            self.on_end(self.target if outcome in (Outcome.OK, Outcome.BUDGET_CUT) else None)


class SpeculativeSession(StreamSession):
    """Streams the fast attempt; swaps to a preferred attempt that gets ready within the window.

    The swap is announced by a chunk with an empty delta and a top-level
    ``omen: {"swap": {"from", "to", "discard_chars"}}``: the client should drop the last
    ``discard_chars`` characters of content it showed and continue with what follows.
    """

    def __init__(
        self,
        call: Call,
        fast: Attempt,
        pending: dict[asyncio.Task[Any], Attempt],
        window_end: float,
    ) -> None:
        super().__init__(call, fast)
        self.fast = fast
        self.pending = pending
        self.window_end = window_end
        self.swapped_from: Target | None = None

    async def _drop_pending(self) -> None:
        """Cancel the preferred candidates still opening, and close those already open."""
        pending = dict(self.pending)
        self.pending.clear()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for attempt in pending.values():
            await attempt.close(Outcome.CANCELLED)

    async def _stream(self) -> AsyncIterator[Batch]:
        fast = self.attempt
        fast_batches = self._budgeted(fast)
        next_batch: asyncio.Future[Batch] = asyncio.ensure_future(anext(fast_batches))
        shown = 0
        try:
            while True:
                timeout = max(0.0, self.window_end - time.perf_counter()) if self.pending else None
                waiting: set[asyncio.Future[Any]] = {next_batch, *self.pending}
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in done if t in self.pending]:
                    attempt = self.pending.pop(task)
                    if not task.cancelled() and task.exception() is None:
                        # A fast read that arrived meanwhile is dropped unseen.
                        await self._swap(fast, attempt, next_batch)
                        yield Batch([Chunk(omen={"swap": {"from": str(fast.target), "to": str(attempt.target), "discard_chars": shown}})])
                        async for batch in self._budgeted(attempt):
                            yield batch
                        return
                if self.pending and time.perf_counter() >= self.window_end:
                    await self._drop_pending()
                if next_batch.done():
                    try:
                        batch = next_batch.result()
                    except StopAsyncIteration:
                        await self._drop_pending()
                        return
                    for chunk in batch:
                        if chunk.finish_reason is not None:
                            await self._drop_pending()  # the fast answer is whole: nothing to swap to
                        shown += len(chunk.delta.get("content") or "")
                    yield batch
                    next_batch = asyncio.ensure_future(anext(fast_batches))
        finally:
            if not next_batch.done():
                next_batch.cancel()
                await asyncio.gather(next_batch, return_exceptions=True)
            await self._drop_pending()

    async def _swap(self, fast: Attempt, to: Attempt, next_batch: asyncio.Future[Batch]) -> None:
        # Own the new attempt before the first await: a disconnect from here on closes it (finish()).
        self.attempt = to
        next_batch.cancel()
        await asyncio.gather(next_batch, return_exceptions=True)
        await fast.close(Outcome.CANCELLED)
        await self._drop_pending()
        self.swapped_from = fast.target

    def batches(self) -> AsyncIterator[Batch]:
        return self._stream()

    async def finish(self, outcome: Outcome, err: UpstreamError | None = None) -> None:
        try:
            await self._drop_pending()
            if self.attempt is not self.fast:
                await self.fast.close(Outcome.CANCELLED)  # a swap interrupted half-way
        finally:
            await super().finish(outcome, err)


class CompletedSession(StreamSession):
    """A whole answer streamed as chunks (role and content, tool calls, finish, omen note)."""

    def __init__(self, call: Call, attempt: Attempt, done: Completion) -> None:
        super().__init__(call, attempt)
        self.done = done

    def usage_or_estimate(self) -> tuple[Usage, bool]:
        return self.done.usage, self.attempt.estimated

    async def _batches(self) -> AsyncIterator[Batch]:
        choice = self.done.body["choices"][0]
        message: dict[str, Any] = choice.get("message") or {}
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        batch = Batch([Chunk(delta=delta)] if delta else [], last=True)
        batch.append(Chunk(finish_reason=choice.get("finish_reason") or "stop", usage=self.done.usage, omen=self.done.body.get("omen")))
        yield batch

    def batches(self) -> AsyncIterator[Batch]:
        return self._batches()

    async def finish(self, outcome: Outcome, err: UpstreamError | None = None) -> None:
        self.on_end(self.target if outcome is Outcome.OK else None)
