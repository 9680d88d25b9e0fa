"""Rate limits on a real Redis: three limiters (instances) share one sliding minute."""

from __future__ import annotations

import asyncio

import pytest

from omen_local.metering.limits import RateLimited
from omen_local.metering.redis_limits import RedisRateLimiter


async def test_three_instances_share_one_rpm(team_redis: str) -> None:
    limiters = [RedisRateLimiter(team_redis) for _ in range(3)]
    start = asyncio.Event()
    admitted, refused = [], []

    async def one(i: int) -> None:
        await start.wait()
        try:
            grant = await limiters[i % 3].acquire([(("user", "alice"), {"rpm": 60.0, "tpm": 1e9})], 10)
        except RateLimited as exc:
            assert exc.key == "rpm" and 0 < exc.retry_after <= 60
            refused.append(i)
            return
        admitted.append(grant)

    tasks = [asyncio.create_task(one(i)) for i in range(150)]
    start.set()
    await asyncio.gather(*tasks)
    assert len(admitted) == 60 and len(refused) == 90
    # A refund gives the slot back, to any instance.
    limiters[0].refund(admitted[0])
    await limiters[0].drain()
    await limiters[2].acquire([(("user", "alice"), {"rpm": 60.0})], 0)
    with pytest.raises(RateLimited):
        await limiters[1].acquire([(("user", "alice"), {"rpm": 60.0})], 0)
    for lim in limiters:
        await lim.aclose()


async def test_provider_rpm_and_tpm_are_shared(team_redis: str) -> None:
    a, b = RedisRateLimiter(team_redis), RedisRateLimiter(team_redis)
    limits = {"rpm": 5.0}
    waits = [await (a if i % 2 else b).provider_wait("openai", limits) for i in range(8)]
    assert waits[:5] == [0.0] * 5 and all(0 < w <= 60 for w in waits[5:])
    a.charge_provider("anthropic", 900)
    await a.drain()
    assert await b.provider_wait("anthropic", {"tpm": 1000.0}) == 0.0
    b.charge_provider("anthropic", 200)
    await b.drain()
    assert await a.provider_wait("anthropic", {"tpm": 1000.0}) > 0  # 1100 tokens in the minute, across both
    for lim in (a, b):
        await lim.aclose()


async def test_tpm_is_corrected_to_what_was_used(team_redis: str) -> None:
    a, b = RedisRateLimiter(team_redis), RedisRateLimiter(team_redis)
    scope = [(("workspace", "lab"), {"tpm": 1000.0})]
    grant = await a.acquire(scope, 900)  # estimated
    a.settle(grant, 100)  # used
    await a.drain()
    await b.acquire(scope, 500)  # 600 in the minute
    await b.acquire(scope, 400)  # admitted only because the 900 became 100 (600 < 1000)
    with pytest.raises(RateLimited):
        await b.acquire(scope, 1)  # 1000: the minute is full
    for lim in (a, b):
        await lim.aclose()


async def test_provider_limits_fall_back_to_this_instance_when_redis_is_away(unused_tcp_port: int) -> None:
    lim = RedisRateLimiter(f"redis://127.0.0.1:{unused_tcp_port}/0")
    assert [await lim.provider_wait("openai", {"rpm": 2.0}) for _ in range(3)][:2] == [0.0, 0.0]
    assert await lim.provider_wait("openai", {"rpm": 2.0}) > 0
    assert lim.health()["state"] == "unreachable"
    assert lim._local_until > 0  # the next ones do not wait on Redis again for a while
    await lim.aclose()


async def test_user_limits_count_on_this_instance_while_redis_is_away(unused_tcp_port: int) -> None:
    """Not a 503: a user's requests (a local model's too) go on, paced by this instance's own minute."""
    lim = RedisRateLimiter(f"redis://127.0.0.1:{unused_tcp_port}/0")
    scope = [(("user", "ann"), {"rpm": 2.0, "tpm": 1000.0})]
    first = await lim.acquire(scope, 10)
    await lim.acquire(scope, 10)
    with pytest.raises(RateLimited) as info:
        await lim.acquire(scope, 10)
    assert info.value.key == "rpm" and lim.health()["state"] == "unreachable" and lim.health()["rule"]
    lim.refund(first)  # the slot comes back here
    await lim.acquire(scope, 10)
    await lim.aclose()
