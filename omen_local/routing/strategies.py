"""The four strategies. Each drives attempts through the Router and returns either a
whole answer (non-streamed requests) or a response stream.

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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import OmenError
from ..providers.base import Completion, UpstreamError
from .attempt import Attempt
from .catalog import Target
from .session import CompletedSession, SpeculativeSession, StreamSession

if TYPE_CHECKING:
    from ..api.request import ChatRequest
    from .router import Plan, RequestContext, Router

T = TypeVar("T")
Result = tuple[Target, Completion]


def final_error(errors: list[UpstreamError]) -> OmenError:
    """One client-facing error for a request whose candidates all failed."""
    if not errors:
        return OmenError(503, "no provider is available", code="no_provider_available")
    summary = "; ".join(e.message for e in errors)
    last = errors[-1]
    if all(e.kind == "limit" for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return OmenError(429, f"rate limited: {summary}", code="rate_limited", retry_after=min(waits) if waits else None)
    if not last.retryable:
        status = last.status or 502
        if status in (400, 413, 422):
            return OmenError(400, last.message, code="upstream_rejected")
        return OmenError(502, f"upstream error: {summary}", code="upstream_error")
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


# ---------------------------------------------------------------- single


async def single(router: Router, ctx: RequestContext, req: ChatRequest, plan: Plan, stream: bool) -> Result | StreamSession:
    errors: list[UpstreamError] = []
    for target in router.live(plan, errors):
        attempt = router.attempt(ctx, req, plan, target)
        try:
            if stream:
                await router.open_attempt(attempt)
                return StreamSession(router, ctx, plan, attempt)
            return target, await router.complete_attempt(attempt)
        except UpstreamError as err:
            errors.append(err)
            if not err.retryable:
                break
    raise final_error(errors)


# ---------------------------------------------------------------- race


async def _first(
    router: Router,
    ctx: RequestContext,
    req: ChatRequest,
    plan: Plan,
    k: int,
    run: Callable[[Attempt], Awaitable[T]],
) -> tuple[Attempt, T]:
    """Run ``run`` on k candidates at once, replacing failures; the first success wins.

    Every other candidate is cancelled the moment the winner is known (its upstream
    connection closes, its partial usage is reported as ``cancelled``).
    """
    errors: list[UpstreamError] = []
    targets = router.live(plan, errors)
    running: dict[asyncio.Task[T], Attempt] = {}

    def launch() -> None:
        target = next(targets, None)
        if target is not None:
            attempt = router.attempt(ctx, req, plan, target)
            running[asyncio.create_task(run(attempt))] = attempt  # type: ignore[arg-type]

    for _ in range(k):
        launch()
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
                    await attempt.close("cancelled")
                elif isinstance(exc, UpstreamError):
                    errors.append(exc)
                    if exc.retryable:  # a request the upstream calls invalid is not re-sent elsewhere
                        launch()
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


async def _close_all(running: dict[asyncio.Task[Any], Attempt], *extra: Attempt) -> None:
    """Cancel the tasks still opening their attempts, then close every attempt (idempotent)."""
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    for attempt in [*running.values(), *extra]:
        await attempt.close("cancelled")


async def race(router: Router, ctx: RequestContext, req: ChatRequest, plan: Plan, stream: bool) -> Result | StreamSession:
    k = req.hints.k or router.config.defaults.k
    if stream:
        attempt, _ = await _first(router, ctx, req, plan, k, router.open_attempt)
        return StreamSession(router, ctx, plan, attempt)
    attempt, done = await _first(router, ctx, req, plan, k, router.complete_attempt)
    return attempt.target, done


# ---------------------------------------------------------------- speculate_k


def speculation_roles(router: Router, plan: Plan, k: int) -> tuple[Target, list[Target]]:
    """(fast, preferred): the fast one has the lowest expected time to first token (local
    providers first when nothing is measured yet); the preferred ones, k-1 of the rest,
    are the dearest by output price (price stands for strength), ties in bucket order."""
    order = {t: i for i, t in enumerate(plan.targets)}

    def expected_ttft(t: Target) -> tuple[float, int, int]:
        local = router.catalog.is_local(t.provider)
        est = router.health.ttft_estimate(t)
        return (est if est is not None else (0.0 if local else float("inf")), 0 if local else 1, order[t])

    fast = min(plan.targets, key=expected_ttft)
    rest = [t for t in plan.targets if t != fast]

    def strength(t: Target) -> tuple[float, float, int]:
        price = router.config.price_for(t.provider, t.model)
        return (-price.output, -price.input, order[t])

    return fast, sorted(rest, key=strength)[: max(1, k - 1)]


async def speculate(router: Router, ctx: RequestContext, req: ChatRequest, plan: Plan, stream: bool) -> Result | StreamSession:
    k = max(2, req.hints.k or router.config.defaults.k)
    if len(plan.targets) < 2:
        return await single(router, ctx, req, plan, stream)
    fast_t, preferred_t = speculation_roles(router, plan, k)
    window_s = router.config.defaults.speculation_window_ms / 1000
    if req.hints.max_latency_ms is not None:
        # 90% of the deadline: the answer in hand must still go out before the deadline fires.
        window_s = min(window_s, 0.9 * req.hints.max_latency_ms / 1000)
    window_end = time.perf_counter() + window_s
    run = router.open_attempt if stream else router.complete_attempt
    errors: list[UpstreamError] = []
    fast: Attempt | None = None
    fast_task: asyncio.Task[Any] | None = None
    if router.admissible(fast_t, errors):  # OMEN's own provider limits apply to every attempt
        fast = router.attempt(ctx, req, plan, fast_t)
        fast_task = asyncio.create_task(run(fast))
    pending: dict[asyncio.Task[Any], Attempt] = {}
    for t in preferred_t:
        if router.admissible(t, errors):
            a = router.attempt(ctx, req, plan, t)
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
                    return StreamSession(router, ctx, plan, attempt) if stream else (attempt.target, task.result())
                errors.append(exc)  # type: ignore[arg-type]
            if fast_task is not None and fast_task in done and fast_task.exception() is not None:
                errors.append(fast_task.exception())  # type: ignore[arg-type]
                fast_task = None
        # Phase 2: the fast one is ready; the preferred ones get the rest of the window.
        assert fast is not None and fast_task is not None
        if stream:
            keep_fast = keep_pending = True
            return SpeculativeSession(router, ctx, plan, fast, pending, window_end)
        left = window_end - time.perf_counter()
        while pending and left > 0:
            done, _ = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                attempt = pending.pop(task)
                if task.exception() is None:
                    return attempt.target, task.result()
            left = window_end - time.perf_counter()
        keep_fast = True
        return fast.target, fast_task.result()
    finally:
        dropped: dict[asyncio.Task[Any], Attempt] = {} if keep_pending else dict(pending)
        if not keep_fast and fast_task is not None and fast is not None:
            dropped[fast_task] = fast
        try:
            await _close_all(dropped, *([fast] if fast is not None and not keep_fast else []))
        except BaseException:
            if chosen is not None:  # cancelled while closing the others: nobody owns it now
                await chosen.close("cancelled")
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


def _merge_body(req: ChatRequest, answers: list[tuple[Attempt, Completion]]) -> dict[str, Any]:
    parts = []
    for i, (attempt, done) in enumerate(answers, 1):
        message = done.body["choices"][0].get("message") or {}
        parts.append(f"<candidate {i} model=\"{attempt.target}\">\n{message.get('content') or ''}\n</candidate {i}>")
    instruction = (
        "Several assistants answered the conversation above. Their answers follow. Write the single best "
        "answer to the user's last message: keep what is correct and useful from each, fix what is wrong, "
        "and answer directly without mentioning the candidates.\n\n" + "\n\n".join(parts)
    )
    body = {k: v for k, v in req.body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
    body["messages"] = [*req.body["messages"], {"role": "user", "content": instruction}]
    return body


async def parallel_merge(router: Router, ctx: RequestContext, req: ChatRequest, plan: Plan, stream: bool) -> Result | StreamSession:
    k = req.hints.k or router.config.defaults.k
    errors: list[UpstreamError] = []
    targets = router.live(plan, errors)
    attempts = [router.attempt(ctx, req, plan, t) for t in [next(targets, None) for _ in range(k)] if t is not None]
    if not attempts:
        raise final_error(errors)
    tasks = {asyncio.create_task(router.complete_attempt(a)): a for a in attempts}
    wait_s = (req.hints.max_latency_ms or router.config.defaults.merge_wait_ms) / 1000
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
            answers.append((attempt, task.result()))
        elif task in done and isinstance(task.exception(), UpstreamError):
            errors.append(task.exception())  # type: ignore[arg-type]
    if not answers:
        if late:
            raise OmenError(504, f"no candidate answered within {wait_s * 1000:g} ms", code="deadline_exceeded")
        raise final_error(errors)

    chosen_attempt: Attempt
    merge_target = router.merge_target()
    if merge_target is not None and len(answers) >= 2 and router.admissible(merge_target, errors):
        body = _merge_body(req, answers)
        capped = router.body_for(req, plan, merge_target)  # its share of the budget, if any
        for key in ("max_tokens", "max_completion_tokens"):
            if key in capped:
                body[key] = capped[key]
        merger = router.attempt(ctx, req, plan, merge_target, body=body)
        left = None if req.hints.max_latency_ms is None else max(0.001, started + wait_s - time.perf_counter())
        try:
            async with asyncio.timeout(left):
                result = await router.complete_attempt(merger)
            chosen_attempt, rule = merger, "merge_model"
        except (UpstreamError, TimeoutError) as err:
            if isinstance(err, UpstreamError):
                errors.append(err)
            index, rule = pick_best(answers)
            chosen_attempt, result = answers[index]
    else:
        index, rule = pick_best(answers)
        chosen_attempt, result = answers[index]

    body = dict(result.body)
    body["omen"] = {
        "strategy": "parallel_merge",
        "rule": rule,
        "chosen": str(chosen_attempt.target),
        "candidates": [
            {
                "provider": a.target.provider,
                "model": a.target.model,
                "outcome": a.outcome,
                "finish_reason": a.finish_reason,
                "cost_usd": round(a.cost_usd, 8),
                "latency_ms": round(a.latency_ms, 2),
                "chosen": a is chosen_attempt,
            }
            for a in [*attempts, *([chosen_attempt] if rule == "merge_model" else [])]
        ],
        "cost_usd": round(ctx.spent_usd, 8),
    }
    merged = Completion(body=body, usage=result.usage)
    if stream:
        return CompletedSession(router, ctx, plan, chosen_attempt, merged)
    return chosen_attempt.target, merged


# Strategies that apply max_latency_ms themselves (the router's deadline would pre-empt them).
SELF_TIMED = frozenset({"parallel_merge"})

STRATEGIES: dict[str, Callable[..., Awaitable[Result | StreamSession]]] = {
    "single": single,
    "race": race,
    "speculate_k": speculate,
    "parallel_merge": parallel_merge,
}
