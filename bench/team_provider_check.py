"""What a team's shared provider limit costs the serving loop: the Redis check awaited
(``RedisRateLimiter.provider_wait``, what OMEN does) against the same script run as a
blocking call on the loop (what it did before), and against the in-process limiter.

Starts a private redis-server (tests/team/servers.py) and stops it. Prints figures and
ratios; asserts nothing.

1. **Per check, sequential.** p50 of one provider check: local limiter, Redis awaited,
   Redis blocking. What an attempt waits for its own check.
2. **Concurrent.** C requests check at once (a burst), R rounds: wall time per burst,
   and the loop's longest stall seen by a 1 ms ticker meanwhile (how long every other
   request on the loop is held up). The blocking call holds the loop for each round
   trip, one after the other; the awaited one lets the others run. (On loopback a round
   trip is mostly redis-py's own CPU, so both are close; across a network the blocking
   call adds every round trip's wait to every other request's.)
3. **Redis not answering** (its process stopped with SIGSTOP: a hung server, a network
   black hole): one provider check, and the loop's longest stall meanwhile. Before, the
   whole server stopped for the check's timeout (0.25 s); now only that attempt waits.

Usage: ``python bench/team_provider_check.py [--checks N] [--concurrency C] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from omen_local.metering.limits import LocalRateLimiter
from omen_local.metering.redis_limits import ACQUIRE, PROVIDER_TIMEOUT_S, RedisRateLimiter
from tests.team.servers import start_redis

LIMITS = {"rpm": 1e12}  # never reached: the cost of the check itself


def _blocking(url: str) -> Callable[[str], Awaitable[float]]:
    """The former path: one synchronous EVALSHA on the loop (the same script, keys and timeout)."""
    client = redis.Redis.from_url(url, socket_timeout=PROVIDER_TIMEOUT_S, socket_connect_timeout=PROVIDER_TIMEOUT_S)
    script = client.register_script(ACQUIRE)
    shape = RedisRateLimiter(url)  # its key and argument layout only
    ids = iter(range(1 << 62))

    async def check(provider: str) -> float:
        keys, args = shape._args(f"b.{next(ids)}", 60.0, [(("provider", provider), "rpm", LIMITS["rpm"], 1.0)])
        answer = script(keys=keys, args=args)
        return float(answer[2]) if int(answer[0]) == 1 else 0.0

    return check


async def _sequential(check: Callable[[str], Awaitable[float]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await check("openai")
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


async def _bursts(check: Callable[[str], Awaitable[float]], c: int, rounds: int) -> tuple[float, float]:
    """(median ms per burst of ``c`` concurrent checks, the loop's longest stall in ms)."""
    stall = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall[0] = max(stall[0], (now - last - 0.001) * 1000)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    walls = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await asyncio.gather(*(check("openai") for _ in range(c)))
        walls.append((time.perf_counter() - t0) * 1000)
    done.set()
    await tick
    return statistics.median(walls), stall[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omen-bench-provider-") as tmp:
        rd = start_redis(Path(tmp) / "redis")
        try:
            local = LocalRateLimiter()
            shared = RedisRateLimiter(rd.url)
            shared.warm()
            blocking = _blocking(rd.url)

            async def local_check(p: str) -> float:
                return await local.provider_wait(p, LIMITS)

            async def awaited_check(p: str) -> float:
                return await shared.provider_wait(p, LIMITS)

            paths = (("local limiter", local_check), ("redis, awaited (now)", awaited_check),
                     ("redis, blocking (before)", blocking))  # fmt: skip
            for _, check in paths:
                await _sequential(check, 100)  # warm: connections open, scripts cached
            print(f"one provider check, {args.checks} sequential:")
            p50 = {}
            for label, check in paths:
                samples = await _sequential(check, args.checks)
                p50[label] = statistics.median(samples)
                print(f"  {label:26s} p50 {p50[label]:.4f} ms  p99 {sorted(samples)[int(0.99 * (len(samples) - 1))]:.4f} ms")
            print(f"  awaited vs blocking p50: {p50['redis, awaited (now)'] / p50['redis, blocking (before)']:.2f}x; "
                  f"added over the local limiter: {p50['redis, awaited (now)'] - p50['local limiter']:.4f} ms")
            print(f"{args.concurrency} concurrent checks, {args.rounds} bursts:")
            burst = {}
            for label, check in paths:
                wall, stall = await _bursts(check, args.concurrency, args.rounds)
                burst[label] = (wall, stall)
                print(f"  {label:26s} {wall:.3f} ms per burst; longest loop stall {stall:.3f} ms")
            a, b = burst["redis, awaited (now)"], burst["redis, blocking (before)"]
            print(f"  blocking/awaited: burst {b[0] / a[0]:.1f}x longer, loop stall {b[1] / max(a[1], 1e-3):.1f}x longer")
            await shared.aclose()

            print("redis not answering (SIGSTOP), one check each:")
            assert rd.proc is not None
            rd.proc.send_signal(signal.SIGSTOP)
            try:
                hung = RedisRateLimiter(rd.url)
                hung_blocking = _blocking(rd.url)

                async def hung_awaited(p: str) -> float:
                    return await hung.provider_wait(p, LIMITS)

                stalls = {}
                for label, check in (("redis, awaited (now)", hung_awaited), ("redis, blocking (before)", hung_blocking)):
                    t0 = time.perf_counter()
                    _, stall = await _bursts(_tolerant(check), 1, 1)
                    stalls[label] = stall
                    print(f"  {label:26s} the attempt waited {(time.perf_counter() - t0) * 1000:.0f} ms; "
                          f"longest loop stall {stall:.1f} ms")
                print(f"  loop stall blocking/awaited: {stalls['redis, blocking (before)'] / max(stalls['redis, awaited (now)'], 1e-3):.0f}x")
            finally:
                rd.proc.send_signal(signal.SIGCONT)
            await hung.aclose()
        finally:
            rd.stop()


def _tolerant(check: Callable[[str], Awaitable[float]]) -> Callable[[str], Awaitable[float]]:
    """The check, its timeout error swallowed (the blocking emulation has no fallback of its own)."""

    async def run(p: str) -> float:
        try:
            return await check(p)
        except redis.exceptions.RedisError:
            return 0.0

    return run


if __name__ == "__main__":
    asyncio.run(main())
