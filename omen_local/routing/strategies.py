"""The four strategies, each a small object behind one :class:`Strategy` protocol.

A strategy gets the request (``Call``: who, what, the plan) and the dispatcher, runs
attempts, and returns either a whole answer (:class:`Completed`, non-streamed requests)
or a response stream (:class:`~.session.StreamSession`).

* ``single``: one candidate at a time, failover before the first token.
* ``race``: k candidates at once; the first to produce content (or a whole answer) wins,
  the others are cancelled at once; a candidate that fails is replaced by the next one.
* ``speculate_k``: the fast candidate streams at once while the preferred one(s) warm up;
  a preferred candidate that gets ready within the speculation window takes over the
  stream (a ``swap`` note tells the client). Non-streamed: the preferred answer if it is
  whole within the window, else the first whole answer.
* ``parallel_merge``: k candidates, all awaited (within ``max_latency_ms``), one merged
  answer: by the configured merge model, else by the pick-best rule (see ``pick_best``).

See docs/strategies.md for the client-visible behaviour of each.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..config import Defaults, StrategyName
from ..errors import OmenError
from ..observe import Outcome
from ..providers.base import Completion, Embeddings
from ..providers.errors import (
    ConnectFailed,
    HTTPStatusError,
    LimitReached,
    RequestRefused,
    RequestRejected,
    TeamBooksUnknown,
    Unsupported,
    UpstreamError,
    UpstreamTimeout,
)
from ..providers.refusals import CONTEXT
from .attempt import Attempt
from .catalog import Catalog, Target
from .dispatch import Call, Dispatcher
from .session import CompletedSession, SpeculativeSession, StreamSession

T = TypeVar("T")


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class Completed:
    """A whole answer (or an embeddings request's vectors) and the target that gave it."""

    target: Target
    completion: Completion | Embeddings


Answer = Completed | StreamSession


class Strategy(Protocol):
    name: StrategyName
    self_timed: bool  # applies max_latency_ms itself (the router's deadline would pre-empt it)

    async def run(self, call: Call, dispatch: Dispatcher) -> Answer: ...


def final_error(errors: list[UpstreamError]) -> OmenError:
    """One client-facing error for a request whose candidates all failed."""
    if not errors:
        return OmenError(503, "no provider is available", code="no_provider_available")
    summary = "; ".join(e.message for e in errors)
    last = errors[-1]
    if all(isinstance(e, TeamBooksUnknown) for e in errors):
        return OmenError(503, f"not yet: {summary}", code="team_books_unknown",
                         retry_after=TeamBooksUnknown.RETRY_S)
    if all(isinstance(e, LimitReached) for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return OmenError(429, f"rate limited: {summary}", code="rate_limited", retry_after=min(waits) if waits else None)
    if isinstance(last, RequestRejected):
        return OmenError(400, last.message, code="invalid_request")
    if not last.retryable:
        status = last.status or 502
        if status in (400, 413, 422):
            return OmenError(400, last.message, code="upstream_rejected")
        return OmenError(502, f"upstream error: {summary}", code="upstream_error")
    if all(isinstance(e, Unsupported) for e in errors):
        refused = [e for e in errors if isinstance(e, RequestRefused)]
        if refused and len(refused) == len(errors) and all(e.reason == CONTEXT for e in refused):
            return OmenError(400, f"no candidate holds this prompt: {summary}", code="context_length_exceeded", param="messages")
        named = next((e.param for e in refused if e.param), None)
        return OmenError(400, f"no provider can take this request: {summary}", code="unsupported_request", param=named)
    if all(e.status == 429 for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return OmenError(
            429,
            f"every provider is rate limiting: {summary}",
            code="upstream_rate_limited",
            retry_after=min(waits) if waits else None,
        )
    if all(isinstance(e, HTTPStatusError) and e.status == 404 for e in errors):
        return OmenError(404, f"model not found upstream: {summary}", code="model_not_found", param="model")
    if isinstance(last, UpstreamTimeout):
        return OmenError(504, f"upstream timed out: {summary}", code="upstream_timeout")
    if all(isinstance(e, ConnectFailed) for e in errors):
        return OmenError(503, f"no provider is reachable: {summary}", code="no_provider_available")
    return OmenError(502, f"upstream error: {summary}", code="upstream_error")


async def _close_all(running: Mapping[asyncio.Task[Any], Attempt], *extra: Attempt) -> None:
    """Cancel the tasks still opening their attempts, then close every attempt (idempotent)."""
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    for attempt in [*running.values(), *extra]:
        await attempt.close(Outcome.CANCELLED)


# ---------------------------------------------------------------- single


class Single:
    name = StrategyName.SINGLE
    self_timed = False

    async def run(self, call: Call, dispatch: Dispatcher) -> Answer:
        errors: list[UpstreamError] = []
        async for target in dispatch.live(call.plan.targets, errors):
            attempt = dispatch.attempt(call, target)
            try:
                if call.stream:
                    await dispatch.open(attempt)
                    return StreamSession(call, attempt)
                return Completed(target, await dispatch.complete(attempt))
            except UpstreamError as err:
                errors.append(err)
                if not err.retryable:
                    break
        raise final_error(errors)


# ---------------------------------------------------------------- race


async def first_ready(
    call: Call, dispatch: Dispatcher, k: int, run: Callable[[Attempt], Awaitable[T]]
) -> tuple[Attempt, T]:
    """Run ``run`` on k candidates at once, replacing failures; the first success wins.

    Every other candidate is cancelled the moment the winner is known (its upstream
    connection closes, its partial usage is reported as ``cancelled``).
    """
    errors: list[UpstreamError] = []
    targets = dispatch.live(call.plan.targets, errors)
    running: dict[asyncio.Task[T], Attempt] = {}

    async def launch() -> None:
        target = await anext(targets, None)
        if target is not None:
            attempt = dispatch.attempt(call, target)
            running[asyncio.create_task(run(attempt))] = attempt  # type: ignore[arg-type]

    for _ in range(k):
        await launch()
    winner: tuple[Attempt, T] | None = None
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: running[t].ttft or float("inf")):
                attempt = running.pop(task)
                exc = task.exception()
                if exc is None and winner is None:
                    winner = (attempt, task.result())
                elif exc is None:  # a tie: it loses too
                    await attempt.close(Outcome.CANCELLED)
                elif isinstance(exc, UpstreamError):
                    errors.append(exc)
                    if exc.retryable:  # a request the upstream calls invalid is not re-sent elsewhere
                        await launch()
                else:
                    raise exc
            if winner is not None:
                break
        else:
            raise final_error(errors)
        await _close_all(running)
    except BaseException:
        # Cancelled (client gone, deadline) at any point, even while closing the losers:
        # nobody will own the winner, so it is closed too.
        await _close_all(running, *([winner[0]] if winner is not None else []))
        raise
    return winner


class Race:
    name = StrategyName.RACE
    self_timed = False

    async def run(self, call: Call, dispatch: Dispatcher) -> Answer:
        if call.stream:
            attempt, _ = await first_ready(call, dispatch, call.plan.k, dispatch.open)
            return StreamSession(call, attempt)
        attempt, done = await first_ready(call, dispatch, call.plan.k, dispatch.complete)
        return Completed(attempt.target, done)


# ---------------------------------------------------------------- speculate_k


class Speculate:
    name = StrategyName.SPECULATE_K
    self_timed = False

    def __init__(self, catalog: Catalog, defaults: Defaults) -> None:
        self.catalog = catalog
        self.window_ms = defaults.speculation_window_ms

    def roles(self, call: Call, dispatch: Dispatcher) -> tuple[Target, list[Target]]:
        """(fast, preferred): the fast one has the lowest expected time to first token (local
        providers first when nothing is measured yet); the preferred ones, k-1 of the rest,
        are the dearest by output price (price stands for strength), ties in bucket order."""
        targets = call.plan.targets
        order = {t: i for i, t in enumerate(targets)}

        def expected_ttft(t: Target) -> tuple[float, int, int]:
            local = self.catalog.is_local(t.provider)
            est = dispatch.health.ttft_estimate(t)
            return (est if est is not None else (0.0 if local else float("inf")), 0 if local else 1, order[t])

        fast = min(targets, key=expected_ttft)
        rest = [t for t in targets if t != fast]

        def strength(t: Target) -> tuple[float, float, int]:
            price = self.catalog.config.price_for(t.provider, t.model)
            return (-price.output, -price.input, order[t])

        return fast, sorted(rest, key=strength)[: max(1, max(2, call.plan.k) - 1)]

    async def run(self, call: Call, dispatch: Dispatcher) -> Answer:
        plan = call.plan
        if len(plan.targets) < 2:
            return await Single().run(call, dispatch)
        fast_t, preferred_t = self.roles(call, dispatch)
        window_s = self.window_ms / 1000
        if plan.deadline_ms is not None:
            # 90% of the deadline: the answer in hand must still go out before the deadline fires.
            window_s = min(window_s, 0.9 * plan.deadline_ms / 1000)
        window_end = time.perf_counter() + window_s
        run = dispatch.open if call.stream else dispatch.complete
        errors: list[UpstreamError] = []
        fast: Attempt | None = None
        fast_task: asyncio.Task[Any] | None = None
        if await dispatch.admissible(fast_t, errors):  # OMEN's own provider limits apply to every attempt
            fast = dispatch.attempt(call, fast_t)
            fast_task = asyncio.create_task(run(fast))
        pending: dict[asyncio.Task[Any], Attempt] = {}
        for t in preferred_t:
            if await dispatch.admissible(t, errors):
                a = dispatch.attempt(call, t)
                pending[asyncio.create_task(run(a))] = a
        keep_fast = keep_pending = False  # what the caller takes over; the rest is closed below
        chosen: Attempt | None = None  # a preferred attempt handed over
        try:
            # Phase 1: until the fast one or a preferred one is ready.
            while fast_task is None or not fast_task.done() or fast_task.exception() is not None:
                waiting = {*pending, *([fast_task] if fast_task is not None else [])}
                if not waiting:
                    raise final_error(errors)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in done if t in pending]:
                    attempt = pending.pop(task)
                    exc = task.exception()
                    if exc is None:  # a preferred candidate is ready first: nothing to speculate on
                        chosen = attempt
                        return StreamSession(call, attempt) if call.stream else Completed(attempt.target, task.result())
                    errors.append(exc)  # type: ignore[arg-type]
                if fast_task is not None and fast_task in done and fast_task.exception() is not None:
                    errors.append(fast_task.exception())  # type: ignore[arg-type]
                    fast_task = None
            # Phase 2: the fast one is ready; the preferred ones get the rest of the window.
            assert fast is not None and fast_task is not None
            if call.stream:
                keep_fast = keep_pending = True
                return SpeculativeSession(call, fast, pending, window_end)
            left = window_end - time.perf_counter()
            while pending and left > 0:
                done, _ = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    attempt = pending.pop(task)
                    if task.exception() is None:
                        return Completed(attempt.target, task.result())
                left = window_end - time.perf_counter()
            keep_fast = True
            return Completed(fast.target, fast_task.result())
        finally:
            dropped: dict[asyncio.Task[Any], Attempt] = {} if keep_pending else dict(pending)
            if not keep_fast and fast_task is not None and fast is not None:
                dropped[fast_task] = fast
            try:
                await _close_all(dropped, *([fast] if fast is not None and not keep_fast else []))
            except BaseException:
                if chosen is not None:  # cancelled while closing the others: nobody owns it now
                    await chosen.close(Outcome.CANCELLED)
                raise


# ---------------------------------------------------------------- parallel_merge

_SPACE = re.compile(r"\s+")
_GOOD_FINISH = ("stop", "tool_calls")


def _norm(done: Completion) -> str:
    message = done.body["choices"][0].get("message") or {}
    text = message.get("content") or ""
    calls = message.get("tool_calls") or []
    tools = ";".join(f"{(c.get('function') or {}).get('name')}:{(c.get('function') or {}).get('arguments')}" for c in calls)
    return f"{_SPACE.sub(' ', text).strip().lower()}|{tools}"


def pick_best(answers: list[tuple[Attempt, Completion]]) -> tuple[int, str]:
    """Index of the best answer and the rule that chose it.

    1. Only answers that ended normally (``stop`` or ``tool_calls``) count, if any did.
    2. ``vote``: if two or more answers agree (same text and tool calls, ignoring case
       and whitespace), the largest agreeing group wins.
    3. ``preference``: otherwise the answer of the candidate first in the plan's order.
    """
    finishes = [done.body["choices"][0].get("finish_reason") for _, done in answers]
    pool = [i for i, f in enumerate(finishes) if f in _GOOD_FINISH] or list(range(len(answers)))
    groups: dict[str, list[int]] = {}
    for i in pool:
        groups.setdefault(_norm(answers[i][1]), []).append(i)
    best = max(groups.values(), key=lambda g: (len(g), -g[0]))
    if len(best) >= 2:
        return best[0], "vote"
    return min(pool), "preference"


def _merge_body(body: dict[str, Any], answers: list[tuple[Attempt, Completion]]) -> dict[str, Any]:
    parts = []
    for i, (attempt, done) in enumerate(answers, 1):
        message = done.body["choices"][0].get("message") or {}
        parts.append(f"<candidate {i} model=\"{attempt.target}\">\n{message.get('content') or ''}\n</candidate {i}>")
    instruction = (
        "Several assistants answered the conversation above. Their answers follow. Write the single best "
        "answer to the user's last message: keep what is correct and useful from each, fix what is wrong, "
        "and answer directly without mentioning the candidates.\n\n" + "\n\n".join(parts)
    )
    out = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
    out["messages"] = [*body["messages"], {"role": "user", "content": instruction}]
    return out


class ParallelMerge:
    name = StrategyName.PARALLEL_MERGE
    self_timed = True

    def __init__(self, defaults: Defaults) -> None:
        self.merge_wait_ms = defaults.merge_wait_ms

    async def run(self, call: Call, dispatch: Dispatcher) -> Answer:
        plan = call.plan
        errors: list[UpstreamError] = []
        targets = dispatch.live(plan.targets, errors)
        picked = [t for t in [await anext(targets, None) for _ in range(plan.k)] if t is not None]
        attempts = [dispatch.attempt(call, t) for t in picked]
        if not attempts:
            raise final_error(errors)
        tasks = {asyncio.create_task(dispatch.complete(a)): a for a in attempts}
        wait_s = (plan.deadline_ms or self.merge_wait_ms) / 1000
        started = time.perf_counter()
        try:
            done, late = await asyncio.wait(tasks, timeout=wait_s)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        answers: list[tuple[Attempt, Completion]] = []
        for task, attempt in tasks.items():
            if task in done and task.exception() is None:
                result = task.result()
                assert isinstance(result, Completion)  # the planner keeps embeddings out of merges
                answers.append((attempt, result))
            elif task in done and isinstance(task.exception(), UpstreamError):
                errors.append(task.exception())  # type: ignore[arg-type]
        if not answers:
            if late:
                raise OmenError(504, f"no candidate answered within {wait_s * 1000:g} ms", code="deadline_exceeded")
            raise final_error(errors)

        chosen, result, rule = await self._choose(call, dispatch, answers, errors, started + wait_s)
        body = dict(result.body)
        body["omen"] = {
            "strategy": self.name.value,
            "rule": rule,
            "chosen": str(chosen.target),
            "candidates": [
                {
                    "provider": a.target.provider,
                    "model": a.target.model,
                    "outcome": a.outcome,
                    "finish_reason": a.finish_reason,
                    "cost_usd": round(a.cost_usd, 8),
                    "latency_ms": round(a.latency_ms, 2),
                    "chosen": a is chosen,
                }
                for a in call.attempts
            ],
            "cost_usd": round(call.spent_usd, 8),
        }
        merged = Completion(body=body, usage=result.usage)
        if call.stream:
            return CompletedSession(call, chosen, merged)
        return Completed(chosen.target, merged)

    async def _choose(
        self,
        call: Call,
        dispatch: Dispatcher,
        answers: list[tuple[Attempt, Completion]],
        errors: list[UpstreamError],
        deadline: float,
    ) -> tuple[Attempt, Completion, str]:
        """The merge model's answer when one is configured and answers in time, else pick-best."""
        target = call.plan.merge_target
        if target is not None and len(answers) >= 2 and await dispatch.admissible(target, errors):
            body = _merge_body(call.request.body, answers)
            capped = call.plan.body_for(call.request.body, dispatch.price_for(target))
            for key in ("max_tokens", "max_completion_tokens"):
                if key in capped:
                    body[key] = capped[key]
            merger = dispatch.attempt(call, target, body=body)
            left = None if call.plan.deadline_ms is None else max(0.001, deadline - time.perf_counter())
            try:
                async with asyncio.timeout(left):
                    merged = await dispatch.complete(merger)
                assert isinstance(merged, Completion)
                return merger, merged, "merge_model"
            except (UpstreamError, TimeoutError) as err:
                if isinstance(err, UpstreamError):
                    errors.append(err)
        index, rule = pick_best(answers)
        return answers[index][0], answers[index][1], rule


def strategies(catalog: Catalog, defaults: Defaults) -> dict[StrategyName, Strategy]:
    """One instance of each strategy, by name."""
    table: list[Strategy] = [Single(), Race(), Speculate(catalog, defaults), ParallelMerge(defaults)]
    return {s.name: s for s in table}
