"""The quota ledger on a real Redis: N ledgers (instances) enforce one quota atomically."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from omen_local.metering import rollup as r
from omen_local.metering.ledger import AllowanceSpent, QuotaExceeded, Scope
from omen_local.metering.redis_ledger import RedisLedger

from .servers import start_redis

T0 = 1_767_225_600.0 + 9 * 86400 + 3 * 3600  # 2026-01-10T03:00:00Z


class Source:
    """The usage store's spend (what the team already spent this month, per day)."""

    def __init__(self, rows: dict[Scope, list[tuple[int, float, int]]]) -> None:
        self.rows, self.loads = rows, 0

    def position(self) -> int:
        return 0

    def durable(self, position: object) -> bool:
        return True

    async def load(self, scope: Scope, since_day: int) -> Sequence[tuple[int, float, int]]:
        self.loads += 1
        return [row for row in self.rows.get(scope, []) if row[0] >= since_day]


async def test_a_150_way_race_over_three_instances_never_overspends(team_redis: str) -> None:
    now = [T0]
    source = Source({("user", "alice"): [(int(T0 // r.DAY), 0.25, 100), (int(T0 // r.DAY) - 5, 9.0, 1)]})
    ledgers = [RedisLedger(team_redis, lambda: now[0], source=source) for _ in range(3)]
    limit, each = 1.0, 0.05  # 0.25 spent today: room for 15 reservations of 0.05
    limits = {"daily_usd": limit, "monthly_usd": 100.0}
    rnd = random.Random(5)
    admitted: list[tuple[int, float]] = []
    refused = 0
    start = asyncio.Event()

    async def request(i: int) -> None:
        nonlocal refused
        ledger = ledgers[i % 3]
        await start.wait()
        try:
            await ledger.reserve(f"req{i}", [(("user", "alice"), limits)], each, 100)
        except QuotaExceeded as exc:
            assert exc.key == "daily_usd" and exc.used + exc.held + exc.need > limit
            refused += 1
            return
        await asyncio.sleep(rnd.random() / 100)  # the upstream answers (a real wait, not synchronisation)
        cost = each * rnd.choice([0.5, 1.0])  # never more than the worst case reserved
        admitted.append((i, cost))
        ledger.settle(f"req{i}", cost, 100)

    tasks = [asyncio.create_task(request(i)) for i in range(150)]
    start.set()
    await asyncio.gather(*tasks)
    for ledger in ledgers:
        await ledger.drain()
    spent = 0.25 + sum(c for _, c in admitted)
    assert refused + len(admitted) == 150
    assert len(admitted) >= 15  # the quota was usable up to its limit
    assert spent <= limit + each + 1e-9  # overspend at most one reservation (here: none)
    day_usd, month_usd, _, _ = await ledgers[0].fetch_used(("user", "alice"))
    assert day_usd == pytest.approx(spent)
    assert month_usd == pytest.approx(spent + 9.0)
    assert await ledgers[1].held(("user", "alice")) == pytest.approx((0.0, 0.0))
    assert 1 <= source.loads <= 3  # one load per instance at most, whatever the concurrency
    # Instances agree: a fourth sees the same books without loading.
    late = RedisLedger(team_redis, lambda: now[0], source=source)
    with pytest.raises(QuotaExceeded):
        await late.reserve("late", [(("user", "alice"), {"daily_usd": spent + 0.01})], 0.02, 1)
    await late.reserve("late2", [(("user", "alice"), {"daily_usd": spent + 0.03})], 0.02, 1)
    for ledger in (*ledgers, late):
        await ledger.aclose()


async def test_a_dead_instances_reservation_expires(team_redis: str) -> None:
    now = [T0]
    a = RedisLedger(team_redis, lambda: now[0], lease_s=60)
    b = RedisLedger(team_redis, lambda: now[0], lease_s=60)
    limits = {"daily_tokens": 1000.0}
    await a.reserve("x", [(("workspace", "lab"), limits)], 0.0, 800)  # a dies holding 800
    with pytest.raises(QuotaExceeded) as info:
        await b.reserve("y", [(("workspace", "lab"), limits)], 0.0, 300)
    assert info.value.held == 800
    now[0] += 61
    await b.reserve("y", [(("workspace", "lab"), limits)], 0.0, 300)
    assert await b.held(("workspace", "lab")) == (0.0, 300.0)
    for ledger in (a, b):
        await ledger.aclose()


async def test_windows_roll_and_names_cannot_collide(team_redis: str) -> None:
    now = [T0]
    ledger = RedisLedger(team_redis, lambda: now[0])
    limits = {"daily_usd": 1.0}
    await ledger.reserve("a", [(("user", "x:y"), limits)], 1.0, 0)
    ledger.settle("a", 1.0, 0)
    await ledger.drain()
    await ledger.reserve("b", [(("user", "x"), limits), (("workspace", "y"), limits)], 1.0, 0)  # other scopes
    with pytest.raises(QuotaExceeded):
        await ledger.reserve("c", [(("user", "x:y"), limits)], 0.5, 0)
    now[0] += r.DAY  # a new UTC day: the daily quota is free again
    await ledger.reserve("c", [(("user", "x:y"), limits)], 0.5, 0)
    await ledger.aclose()


async def test_redis_away_never_seen_scopes_get_no_allowance(unused_tcp_port: int) -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{unused_tcp_port}/0")
    with pytest.raises(AllowanceSpent) as info:  # never seen in Redis: nothing to take a share of
        await ledger.reserve("a", [(("user", "u"), {"daily_usd": 1.0})], 0.1, 1)
    assert info.value.allowance == 0.0 and info.value.since
    assert ledger.health()["state"] == "unreachable"
    await ledger.reserve("local", [(("user", "u"), {"daily_usd": 1.0})], 0.0, 500)  # free: served
    with pytest.raises(AllowanceSpent):
        await ledger.reserve("local2", [(("user", "u"), {"daily_tokens": 1e6})], 0.0, 500)  # tokens count
    ledger.settle("local", 0.0, 500)
    # Workspace names are the clients' choice: never-seen scopes leave nothing behind.
    for i in range(300):
        ws = [(("workspace", f"made-up-{i}"), {"daily_usd": 1.0})]
        await ledger.reserve(f"free{i}", ws, 0.0, 1)
        ledger.settle(f"free{i}", 0.0, 1)
        with pytest.raises(AllowanceSpent):
            await ledger.reserve(f"paid{i}", ws, 0.1, 1)
    assert len(ledger.health().get("allowances", {})) == 0
    await ledger.aclose()


async def test_redis_away_spends_a_share_of_what_was_left_then_refuses(tmp_path: Path) -> None:
    """The rule (docs/team.md): Redis away, each instance may spend 5% of what remained of each quota
    when it last saw it; past that, refused. Back: the team's quota again, with the charges made meanwhile."""
    rd = start_redis(tmp_path / "redis")
    try:
        now = [T0]
        ledger = RedisLedger(rd.url, lambda: now[0], source=Source({}))
        limits = {"daily_usd": 10.0}
        await ledger.reserve("a", [(("user", "ann"), limits)], 2.0, 1)  # seen: 10 - 2 = 8 left
        ledger.settle("a", 2.0, 1)
        await ledger.drain()
        rd.stop()
        # 5% of 8 USD = 0.4 USD for this instance while Redis is away.
        await ledger.reserve("b", [(("user", "ann"), limits)], 0.25, 1)
        with pytest.raises(AllowanceSpent) as info:
            await ledger.reserve("c", [(("user", "ann"), limits)], 0.25, 1)  # 0.25 held + 0.25 > 0.4
        assert info.value.allowance == pytest.approx(0.4) and info.value.used == pytest.approx(0.25)
        ledger.settle("b", 0.1, 1)  # it cost less than its worst case: the rest is free again
        await ledger.drain()
        await ledger.reserve("c", [(("user", "ann"), limits)], 0.25, 1)  # 0.1 + 0.25 <= 0.4
        ledger.settle("c", 0.25, 1)
        await ledger.drain()
        health = ledger.health()
        assert health["state"] == "unreachable" and health["charges_waiting"] == 2
        assert health["allowances"]["user ann"]["daily_usd"] == {"allowance": 0.4, "used": 0.35}
        with pytest.raises(AllowanceSpent):
            await ledger.reserve("d", [(("user", "ann"), limits)], 0.1, 1)
        await ledger.reserve("free", [(("user", "ann"), limits)], 0.0, 99)  # a local model: served
        ledger.settle("free", 0.0, 99)
        rd.start()  # empty (no save): the window loads again from the store, which has every charge
        ledger.source = Source({("user", "ann"): [(int(T0 // r.DAY), 2.35, 3)]})
        now[0] += 5  # the window is loaded again a little after those charges
        await ledger.reserve("e", [(("user", "ann"), limits)], 1.0, 1)  # back: the team's quota
        assert ledger.health()["state"] == "ok" and "allowances" not in ledger.health()
        deadline = asyncio.get_running_loop().time() + 30
        while ledger.health()["charges_waiting"]:  # the kept charges reach Redis (a window loaded after them)
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert (await ledger.fetch_used(("user", "ann")))[0] == pytest.approx(2.35)  # nothing twice
        await ledger.aclose()
    finally:
        rd.stop()


async def test_redis_restarted_empty_reloads_the_windows_from_the_store(tmp_path: Path) -> None:
    """Redis away: a clear refusal and an unreachable status; back (empty, as --save '' leaves it): the
    window is loaded again from the usage store, and admission goes on without a restart."""
    rd = start_redis(tmp_path / "redis")
    try:
        now = [T0]
        day = int(T0 // r.DAY)
        source = Source({("user", "bob"): [(day, 0.9, 10)]})
        ledger = RedisLedger(rd.url, lambda: now[0], source=source)
        limits = {"daily_usd": 1.0}
        await ledger.reserve("a", [(("user", "bob"), limits)], 0.05, 1)
        ledger.settle("a", 0.05, 1)
        await ledger.drain()
        await ledger.reserve("x", [(("user", "bob"), limits)], 0.01, 1)
        rd.stop()
        ledger.settle("x", 0.01, 1)  # kept for Redis; the store gets it too (below)
        with pytest.raises(AllowanceSpent):  # 5% of the 0.04 left when last seen: 0.002
            await ledger.reserve("b", [(("user", "bob"), limits)], 0.01, 1)
        health = ledger.health()
        assert health["state"] == "unreachable" and health["unreachable_since"]
        rd.start()  # same port and password, no data
        now[0] += 5  # the window is loaded again a little later
        source.rows[("user", "bob")] += [(day, 0.05, 1), (day, 0.01, 1)]  # the store has both charges
        with pytest.raises(QuotaExceeded) as info:
            await ledger.reserve("c", [(("user", "bob"), limits)], 0.06, 1)
        assert info.value.used == pytest.approx(0.96)
        deadline = asyncio.get_running_loop().time() + 30
        while ledger.health()["charges_waiting"]:  # the retry reaches the reloaded window...
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert (await ledger.fetch_used(("user", "bob")))[0] == pytest.approx(0.96)  # ...and adds nothing twice
        await ledger.reserve("d", [(("user", "bob"), limits)], 0.04, 1)
        assert ledger.health()["state"] == "ok"
        await ledger.aclose()
    finally:
        rd.stop()


async def test_a_charge_redis_could_not_take_is_retried_once_it_is_back(tmp_path: Path) -> None:
    rd = start_redis(tmp_path / "redis")
    try:
        now = [T0]
        ledger = RedisLedger(rd.url, lambda: now[0], source=Source({}))
        limits = {"daily_usd": 1.0}
        await ledger.reserve("a", [(("user", "carl"), limits)], 0.3, 1)
        await ledger.reserve("b", [(("user", "carl"), limits)], 0.3, 1)
        import redis as sync_redis

        sync_redis.Redis.from_url(rd.url).save()  # the window survives the restart (dump.rdb)
        rd.stop()
        ledger.settle("a", 0.25, 1)  # Redis is away: kept
        await ledger.drain()
        assert ledger.health()["charges_waiting"] == 1
        rd.start()
        deadline = asyncio.get_running_loop().time() + 30
        while ledger.health()["charges_waiting"]:  # the retry loop's back-off, polled with a deadline
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        ledger.settle("b", 0.25, 1)
        await ledger.drain()
        day_usd, _, _, _ = await ledger.fetch_used(("user", "carl"))
        assert day_usd == pytest.approx(0.5)  # each charge once
        assert await ledger.held(("user", "carl")) == pytest.approx((0.0, 0.0))
        await ledger.aclose()
    finally:
        rd.stop()
