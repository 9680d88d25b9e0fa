"""The Policy the router calls: rate limits and quotas, with errors that name the limit.

``admit`` takes the rate limits first (per user, then workspace), then reserves the
worst case in the quota ledger; if the ledger refuses, the rate-limit counts are
refunded, so a refused request costs nothing. Nothing awaits in between with the
in-process ledger and limiter, which is what makes admission atomic (the ledger may
first await loading a scope's spend from the store; the check itself does not await).

What a request costs arrives once, as its attempts' UsageEvents from the usage sink
(``on_usage``); ``release`` at the request's end settles the hold with that sum.

Two 503s: usage cannot be recorded at all (``blocked``: the journal fails and the
writer's queue is full), or a quota cannot be checked (its scope's spend cannot be read).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..caller import Caller
from ..errors import OmenError
from ..observe import UsageEvent
from ..policy import CostBound
from . import rollup as r
from .books import LimitBook, QuotaBook
from .ledger import AllowanceSpent, QuotaExceeded, QuotaLedger, Scope, SpendUnavailable
from .limits import Grant, RateLimited, RateLimiter

_QUOTA_LABEL = {
    "daily_usd": ("daily USD quota", "today"),
    "monthly_usd": ("monthly USD quota", "this month"),
    "daily_tokens": ("daily token quota", "today"),
    "monthly_tokens": ("monthly token quota", "this month"),
}


def _amount(key: str, value: float) -> str:
    return f"{value:.6g} USD" if key.endswith("usd") else f"{math.ceil(value)} tokens"


class Enforcer:
    def __init__(
        self,
        quotas: QuotaBook,
        limits: LimitBook,
        ledger: QuotaLedger,
        limiter: RateLimiter,
        clock: Callable[[], float] = time.time,
        *,
        blocked: Callable[[], str | None] | None = None,
    ) -> None:
        self.ledger, self.limiter, self.clock = ledger, limiter, clock
        self.blocked = blocked
        self._grants: dict[str, Grant] = {}
        self._spent: dict[str, list[float]] = {}  # request_id -> [usd, tokens] of its attempts so far
        self.configure(quotas, limits)

    def configure(self, quotas: QuotaBook, limits: LimitBook) -> None:
        """Which limits apply (at start, and when the config is reloaded)."""
        self.quotas, self.limits = quotas, limits
        self._provider: dict[str, dict[str, float]] = {
            name: lim for name in limits.config.providers if (lim := limits.limits(("provider", name)))
        }
        self._provider_tpm = frozenset(name for name, lim in self._provider.items() if "tpm" in lim)

    # ------------------------------------------------------------ Policy

    async def admit(self, caller: Caller, bound: CostBound) -> None:
        if self.blocked is not None and (why := self.blocked()) is not None:
            raise OmenError(503, f"{why}; retry shortly", code="usage_unrecordable", retry_after=5)
        user: Scope = ("user", caller.user)
        scopes = [user] if caller.workspace is None else [user, ("workspace", caller.workspace)]
        rate = [(s, lim) for s in scopes if (lim := self.limits.limits(s))]
        grant = None
        if rate:
            try:
                grant = await self.limiter.acquire(rate, bound.prompt_tokens)
            except RateLimited as exc:
                raise self._rate_error(exc) from None
        self.quotas.refresh()
        try:
            await self.ledger.reserve(
                caller.request_id, [(s, self.quotas.limits(s)) for s in scopes], bound.worst_usd, bound.worst_tokens
            )
        except BaseException as exc:  # refused, failed or cancelled: the request never runs
            if grant is not None:
                self.limiter.refund(grant)
            if isinstance(exc, QuotaExceeded):
                raise self._quota_error(exc, bound) from None
            if isinstance(exc, AllowanceSpent):
                raise self._allowance_error(exc) from None
            if isinstance(exc, SpendUnavailable):
                kind, name = exc.scope
                raise OmenError(
                    503,
                    f"the quota of {kind} '{name}' cannot be checked: its spend could not be read from the usage "
                    f"store ({exc.reason})",
                    code="quota_unavailable",
                    retry_after=5,
                ) from None
            raise
        if grant is not None:
            self._grants[caller.request_id] = grant
        self._spent[caller.request_id] = [0.0, 0.0]

    async def provider_wait(self, provider: str) -> float:
        limits = self._provider.get(provider)
        return 0.0 if limits is None else await self.limiter.provider_wait(provider, limits)

    def release(self, request_id: str) -> None:
        spent = self._spent.pop(request_id, None)
        if spent is None:  # never admitted, or released already
            return
        usd, tokens = spent[0], int(spent[1])
        self.ledger.settle(request_id, usd, tokens)
        grant = self._grants.pop(request_id, None)
        if grant is not None:
            self.limiter.settle(grant, tokens)

    def on_usage(self, event: UsageEvent) -> None:
        """One attempt's usage: it counts toward its request's hold and its provider's token limit."""
        u = event.usage
        tokens = u.prompt_tokens + u.completion_tokens
        if event.provider in self._provider_tpm:
            self.limiter.charge_provider(event.provider, tokens)
        spent = self._spent.get(event.request_id)
        if spent is not None:
            spent[0] += event.cost_usd
            spent[1] += tokens

    # ------------------------------------------------------------ errors

    def _rate_error(self, exc: RateLimited) -> OmenError:
        kind, name = exc.scope
        _, source = self.limits.effective(exc.scope)[exc.key]
        what = "requests" if exc.key == "rpm" else "tokens"
        return OmenError(
            429,
            f"rate limit reached: {kind} '{name}' may use {exc.limit:g} {what} per minute ({source}); "
            f"retry in {math.ceil(exc.retry_after)} s",
            code="rate_limited",
            param=f"{kind}.{exc.key}",
            retry_after=exc.retry_after,
        )

    def _allowance_error(self, exc: AllowanceSpent) -> OmenError:
        """The team's quota store is away and this instance's share of the quota is spent (docs/team.md)."""
        kind, name = exc.scope
        label, _ = _QUOTA_LABEL[exc.key]
        return OmenError(
            402,
            f"the team's quota store (Redis) is unreachable since {exc.since}: until it answers, this OMEN may "
            f"spend {exc.share:.0%} of what remained of the {label} of {kind} '{name}' when it last saw it "
            f"({_amount(exc.key, exc.allowance)}); {_amount(exc.key, exc.used)} is used or held here, and this "
            f"request may use up to {_amount(exc.key, exc.need)}"
            + (". Local models (free) are not affected" if exc.key.endswith("usd") else ""),
            code="team_allowance_spent",
            param=f"{kind}.{exc.key}",
            retry_after=30,
        )

    def _quota_error(self, exc: QuotaExceeded, bound: CostBound) -> OmenError:
        kind, name = exc.scope
        key = exc.key
        label, period = _QUOTA_LABEL[key]
        _, source = self.quotas.effective(exc.scope)[key]
        worst = f"prompt ~{bound.prompt_tokens} tokens + up to {bound.max_output_tokens} output tokens"
        if exc.limit <= 0:
            message = f"{kind} '{name}' has a {label} of 0 ({source}): no requests are allowed"
            retry = None
        elif exc.need > exc.limit:
            message = (
                f"this request may use up to {_amount(key, exc.need)} ({worst}), more than the whole {label} "
                f"of {kind} '{name}' ({_amount(key, exc.limit)}, {source}); lower max_tokens"
            )
            retry = None
        else:
            message = (
                f"the {label} of {kind} '{name}' ({_amount(key, exc.limit)}, {source}) would be exceeded: "
                f"{_amount(key, exc.used)} used {period} (UTC), {_amount(key, exc.held)} held by requests in "
                f"flight, and this request may use up to {_amount(key, exc.need)} ({worst}); "
                f"it resets at {r.iso(exc.resets_at)}"
            )
            retry = max(1.0, exc.resets_at - self.clock())
        return OmenError(402, message, code="quota_exceeded", param=f"{kind}.{key}", retry_after=retry)
