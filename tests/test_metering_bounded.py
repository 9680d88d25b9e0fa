"""Per-scope state stays bounded whatever names clients invent, and quotas still hold.

100,000 distinct user and workspace names go through admission and settlement with
default quotas and rate limits (so every name needs checking); the ledger's tallies,
the limiter's windows and the books' caches stay bounded, and a configured user's quota
still holds after its tally was dropped and reloaded. Plus: ``quotas.json`` is looked at
a few times a second, not at every request, and ``omen quota set`` from another process
still applies within that delay.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
import pytest

from omen_local.caller import Caller
from omen_local.config import LimitConfig, QuotaConfig, QuotaLimits, RateLimits, load_config
from omen_local.errors import OmenError
from omen_local.metering import Metering
from omen_local.metering.books import REFRESH_S, LimitBook, QuotaBook
from omen_local.metering.enforcer import Enforcer
from omen_local.metering.ledger import LocalLedger, Scope
from omen_local.metering.limits import WINDOW_S, LocalRateLimiter
from omen_local.observe import UsageEvent
from omen_local.policy import CostBound
from omen_local.providers.base import Usage
from tests import metering_util as mu
from tests.conftest import Stack
from tests.waiting import ManualClock

T0 = 1_767_225_600.0 + 3600  # 2026-01-01T01:00:00Z


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class StoreLike:
    """What the usage store would answer: spend per scope and day, always committed at once."""

    def __init__(self) -> None:
        self.days: dict[Scope, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
        self.loads = 0

    def charge(self, scopes: Sequence[Scope], day: int, usd: float, tokens: int) -> None:
        for scope in scopes:
            acc = self.days[scope][day]
            acc[0] += usd
            acc[1] += tokens

    def position(self) -> Any:
        return 0

    def durable(self, position: Any) -> bool:
        return True

    async def load(self, scope: Scope, since_day: int) -> Sequence[tuple[int, float, int]]:
        self.loads += 1
        found = self.days.get(scope, {})
        return [(day, usd, int(tokens)) for day, (usd, tokens) in found.items() if day >= since_day]


def spent(caller: Caller, usd: float, tokens: int) -> UsageEvent:
    """The one attempt of ``caller``'s request, as the usage sink hands it to the policy."""
    return UsageEvent(
        f"{caller.request_id}.0", caller.request_id, caller.user, caller.workspace, None, None, "openai",
        "gpt-4o-mini", "single", Usage(tokens // 2, tokens - tokens // 2), usd, 1.0, 2.0, "ok",
    )  # fmt: skip


async def test_100k_invented_names_leave_bounded_state_and_quotas_hold(tmp_path: Path) -> None:
    clock = Clock(T0)
    mono = Clock(1000.0)
    quotas = QuotaConfig(
        default_user=QuotaLimits(daily_usd=5.0),
        default_workspace=QuotaLimits(monthly_tokens=1e9),
        users={"alice": QuotaLimits(daily_usd=1.0)},
    )
    limits = LimitConfig(default_user=RateLimits(rpm=100), default_workspace=RateLimits(tpm=1e6))
    store = StoreLike()
    ledger = LocalLedger(clock, source=store, idle_s=120.0)
    limiter = LocalRateLimiter(mono)
    book = QuotaBook(quotas, tmp_path, clock=mono)
    limit_book = LimitBook(limits)
    enforcer = Enforcer(book, limit_book, ledger, limiter, clock)
    bound = CostBound(100, 100, 0.3)
    day = int(clock.t // 86400)

    async def run(user: str, workspace: str | None, rid: str, usd: float) -> None:
        caller = Caller(rid, user, workspace)
        await enforcer.admit(caller, bound)
        enforcer.on_usage(spent(caller, usd, 150))
        store.charge([("user", user), *([("workspace", workspace)] if workspace else [])], day, usd, 150)
        enforcer.release(rid)

    for i in range(3):  # alice spends 0.9 of her 1.0 USD today
        await run("alice", "lab", f"a{i}", 0.3)
    assert ledger.used(("user", "alice"))[0] == pytest.approx(0.9)

    peak = 0
    rnd = random.Random(13)
    for i in range(100_000):  # 0.01 s apart: 1,000 s in all, several idle periods and minutes
        clock.t += 0.01
        mono.t += 0.01
        name = f"{rnd.getrandbits(64):x}.{i}"
        await run(f"u-{name}", f"w-{name}" if i % 2 else None, f"r{i}", 0.001)
        peak = max(peak, len(ledger._tallies), len(limiter._windows))
    # Tallies: the scopes of the last idle_s (12,000 names, 1.5 scopes each: 18,000), windows:
    # those of the last minute (9,000); the clocks are fake, so these are exact but for the
    # sweep's step. Without eviction: 150,002 tallies.
    assert len(ledger._tallies) <= 1.1 * (120 / 0.01) * 1.5
    assert len(limiter._windows) <= 1.1 * (WINDOW_S / 0.01) * 1.5
    assert peak <= 1.1 * (120 / 0.01) * 1.5
    assert ("user", "alice") not in ledger._tallies  # dropped while idle
    assert len(book._cache) == 1 and len(book._finite_cache) == 1  # alice only: the rest share the defaults
    assert len(limit_book._cache) == 0 and len(limit_book._finite_cache) == 0
    assert enforcer._grants == {} and ledger._holds == {} and ledger._loading == {}

    with pytest.raises(OmenError) as err:  # reloaded from the store: 0.9 spent, 0.3 more would break 1.0
        await enforcer.admit(Caller("late", "alice"), bound)
    assert err.value.status == 402 and err.value.param == "user.daily_usd"
    assert "0.9 USD used today" in err.value.message
    small = CostBound(10, 10, 0.05)
    await enforcer.admit(Caller("small", "alice"), small)  # 0.95 fits
    assert ledger.held(("user", "alice"))[0] == pytest.approx(0.05)


async def test_a_busy_scope_is_never_dropped_and_a_long_request_keeps_its_tally(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = StoreLike()
    ledger = LocalLedger(clock, source=store, idle_s=10.0)
    alice: Scope = ("user", "alice")
    await ledger.reserve("long", [(alice, {"daily_usd": 1.0})], 0.6, 0)  # in flight for an hour
    for i in range(200):
        clock.t += 30
        await ledger.reserve(f"o{i}", [(("user", f"x{i}"), {"daily_usd": 1.0})], 0.0, 0)
        ledger.settle(f"o{i}", 0.0, 0)
    assert alice in ledger._tallies and ledger.held(alice)[0] == pytest.approx(0.6)
    with pytest.raises(Exception, match="daily_usd"):
        await ledger.reserve("more", [(alice, {"daily_usd": 1.0})], 0.5, 0)  # the hold still counts
    ledger.settle("long", 0.6, 0)
    store.charge([alice], int(clock.t // 86400), 0.6, 0)


async def test_tallies_are_capped_even_when_names_come_faster_than_idle_time(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = StoreLike()
    ledger = LocalLedger(clock, source=store, idle_s=1e9, max_tallies=100)  # nothing is ever idle
    await ledger.reserve("held", [(("user", "carol"), {"daily_usd": 1.0})], 0.4, 0)
    for i in range(1000):
        clock.t += 0.001
        scope: Scope = ("workspace", f"w{i}")
        await ledger.reserve(f"r{i}", [(scope, {"monthly_usd": 5.0})], 0.01, 0)
        ledger.settle(f"r{i}", 0.01, 0)
        store.charge([scope], int(clock.t // 86400), 0.01, 0)
        assert len(ledger._tallies) <= 100 + 2
    assert ("user", "carol") in ledger._tallies  # a reservation keeps its tally, cap or not
    assert ledger.held(("user", "carol"))[0] == pytest.approx(0.4)
    await ledger.reserve("again", [(("workspace", "w0"), {"monthly_usd": 5.0})], 0.0, 0)  # reloaded
    assert ledger.used(("workspace", "w0"))[1] == pytest.approx(0.01)


async def test_a_tally_is_kept_until_the_store_has_its_spend(tmp_path: Path) -> None:
    """Dropping a tally whose last charge is not committed yet would forget that spend."""
    clock = Clock(T0)
    store = StoreLike()
    committed = [False]
    store.durable = lambda position: committed[0]  # type: ignore[method-assign]
    ledger = LocalLedger(clock, source=store, idle_s=1.0)
    bob: Scope = ("user", "bob")
    await ledger.reserve("a", [(bob, {"daily_usd": 1.0})], 0.5, 0)
    ledger.settle("a", 0.5, 0)  # not in the store yet
    clock.t += 100
    await ledger.reserve("b", [(("user", "other"), {"daily_usd": 1.0})], 0.0, 0)
    assert bob in ledger._tallies
    committed[0] = True
    store.charge([bob], int(T0 // 86400), 0.5, 0)
    clock.t += 100
    await ledger.reserve("c", [(("user", "other2"), {"daily_usd": 1.0})], 0.0, 0)
    assert bob not in ledger._tallies
    with pytest.raises(Exception, match="daily_usd"):
        await ledger.reserve("d", [(bob, {"daily_usd": 1.0})], 0.6, 0)  # reloaded: 0.5 + 0.6 > 1


async def test_a_dropped_tally_reloads_from_the_real_store(tmp_path: Path) -> None:
    config = load_config(
        None,
        overrides={"storage": {"data_dir": str(tmp_path)}, "quotas": {"users": {"alice": {"daily_usd": 1.0}}}},
    )
    metering = Metering(config)
    assert isinstance(metering.ledger, LocalLedger)
    metering.ledger.idle_s = 0.0
    await metering.start()
    policy = metering.policy
    bound = CostBound(10, 10, 0.3)
    try:
        for i in range(3):
            caller = Caller(f"req_{i}", "alice")
            await policy.admit(caller, bound)
            metering.record(spent(caller, 0.3, 20))  # the usage sink: journal, store, policy
            policy.release(caller.request_id)
        await metering.flush()
        for i in range(50):  # other users' admissions sweep alice's idle, committed tally away
            caller = Caller(f"n{i}", f"n{i}")
            await policy.admit(caller, CostBound(1, 1, 0.0))
            metering.record(spent(caller, 0.0, 2))
            policy.release(caller.request_id)
        assert ("user", "alice") not in metering.ledger._tallies
        with pytest.raises(OmenError) as err:
            await policy.admit(Caller("late", "alice"), bound)
        assert err.value.status == 402 and "0.9 USD used today" in err.value.message
    finally:
        await metering.stop()


async def test_quota_file_is_looked_at_a_few_times_a_second_not_per_request(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats: list[str] = []
    real = os.stat

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("quotas.json"):
            stats.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting)
    assert stack.service.metering is not None
    clock = stack.service.metering.quotas.clock = ManualClock()  # the book's injected clock

    async def forty() -> None:
        await asyncio.gather(*(stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG) for _ in range(40)))  # type: ignore[arg-type]

    await forty()
    assert len(stats) <= 1  # not 40: at most the look that was due already
    before = len(stats)
    clock.advance(REFRESH_S)
    await forty()
    assert len(stats) == before + 1  # REFRESH_S later: one look, for all forty


async def test_omen_quota_set_from_another_process_applies_within_the_delay(stack: Stack) -> None:
    await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if k != "OMEN_TOKEN"}
    config = str(stack.data_dir.parent / "config.toml")
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "omen_local", "quota", "set", "--config", config, "--user", "owner", "--daily-usd", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    assert err.value.status_code == 402 and err.value.code == "quota_exceeded"
