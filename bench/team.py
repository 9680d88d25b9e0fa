"""What the team stores cost: quota admission through Redis against the local ledger, and
``/v1/usage`` rollups from PostgreSQL at N events.

Starts a private PostgreSQL and Redis (tests/team/servers.py: initdb + pg_ctl, redis-server
on free ports in a temp dir) and stops them. Prints figures and ratios; asserts nothing.

1. **Admission.** ``reserve`` + ``settle`` of one request under a daily quota, sequential,
   N times: ``LocalLedger`` (in process) against ``RedisLedger`` (one EVALSHA each, over
   loopback). The p50 difference is what a team instance adds per request.
2. **Rollups.** N synthetic events (30 days, 5 users, 6 models) shipped through the
   store's own path (batches, folds), then a day's rollup by user and model and a month's
   by day, timed (median of 5).

Usage: ``python bench/team.py [--requests N] [--events N]`` (defaults 2000 and 100000;
the issue's figure is at ``--events 1000000``, which takes several minutes to load).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omen_local.metering import rollup as r
from omen_local.metering.ledger import LocalLedger
from omen_local.metering.pg_store import PgUsageStore
from omen_local.metering.redis_ledger import RedisLedger
from tests.team.servers import start_postgres, start_redis
from tests.test_metering_store import random_events


async def _admission(ledger: LocalLedger | RedisLedger, n: int) -> tuple[list[float], list[float]]:
    """(admission ms, charge ms) per request: reserve on the request's path; settle (in the
    background for Redis) timed to its end."""
    limits = {"daily_usd": 1e9, "monthly_usd": 1e9}
    admit, charge = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await ledger.reserve(f"r{i}", [(("user", "bench"), limits)], 0.001, 100)
        t1 = time.perf_counter()
        ledger.settle(f"r{i}", 0.001, 100)
        if isinstance(ledger, RedisLedger):
            await ledger.drain()
        admit.append((t1 - t0) * 1000)
        charge.append((time.perf_counter() - t1) * 1000)
    return admit, charge


def _p(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omen-bench-team-") as tmp:
        rd = start_redis(Path(tmp) / "redis")
        pg = start_postgres(Path(tmp) / "pg")
        try:
            local, local_charge = await _admission(LocalLedger(), args.requests)
            redis_ledger = RedisLedger(rd.url)
            await _admission(redis_ledger, 50)  # warm: scripts loaded, connection open
            shared, shared_charge = await _admission(redis_ledger, args.requests)
            await redis_ledger.aclose()
            lp50, rp50 = statistics.median(local), statistics.median(shared)
            print(f"admission (reserve), {args.requests} sequential requests:")
            print(f"  local ledger  p50 {lp50:.4f} ms  p99 {_p(local, 0.99):.4f} ms")
            print(f"  redis ledger  p50 {rp50:.4f} ms  p99 {_p(shared, 0.99):.4f} ms")
            print(f"  added by the team path: p50 {rp50 - lp50:.4f} ms (ratio {rp50 / lp50:.1f}x)")
            print(
                f"charge (settle, off the request's path for Redis): local p50 {statistics.median(local_charge):.4f} ms, "
                f"redis p50 {statistics.median(shared_charge):.4f} ms"
            )

            store = PgUsageStore(pg.create_db("bench"), "bench", Path(tmp))
            store.open()
            events = sorted(random_events(args.events, seed=1), key=lambda e: e.time)
            span = 30 * r.DAY
            t0 = time.perf_counter()
            with store.db.connection_context():
                for i in range(0, len(events), 5000):
                    batch = events[i : i + 5000]
                    for k, e in enumerate(batch):  # spread over 30 days
                        e.time = 1_767_225_600.0 + (i + k) / len(events) * span
                    store.commit([("u", i + k + 1, e) for k, e in enumerate(batch)])
            store.compact()
            load_s = time.perf_counter() - t0
            print(f"loaded {len(events)} events into PostgreSQL in {load_s:.1f} s ({len(events) / load_s:.0f}/s)")
            day0 = 1_767_225_600.0 + 15 * r.DAY
            for label, query in (
                ("a day by user and model", r.RollupQuery(day0, day0 + r.DAY, ("user", "model"))),
                ("30 days by day", r.RollupQuery(1_767_225_600.0, 1_767_225_600.0 + span, (), "day")),
            ):
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    store.rollup(query)
                    times.append((time.perf_counter() - t0) * 1000)
                print(f"rollup, {label}: median {statistics.median(times):.1f} ms, worst {max(times):.1f} ms")
            store.close()
        finally:
            rd.stop()
            if pg.running():
                pg.stop("immediate")


if __name__ == "__main__":
    asyncio.run(main())
