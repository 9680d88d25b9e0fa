"""Rate limits: 429 ``rate_limited`` with Retry-After, per user, workspace and provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from omen_local.metering.limits import LocalRateLimiter, RateLimited
from tests import metering_util as mu
from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import Reply as AReply
from tests.fakes.fake_anthropic import Text


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_the_window_slides_and_retry_after_is_exact() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    alice = [(("user", "alice"), {"rpm": 2.0})]
    await limiter.acquire(alice, 0)
    clock.t += 20
    await limiter.acquire(alice, 0)
    clock.t += 10
    with pytest.raises(RateLimited) as exc:
        await limiter.acquire(alice, 0)
    assert exc.value.retry_after == pytest.approx(30)  # the first leaves the window at t+60
    clock.t += 30.001
    await limiter.acquire(alice, 0)
    with pytest.raises(RateLimited) as exc:
        await limiter.acquire(alice, 0)
    assert exc.value.retry_after == pytest.approx(20 - 0.001)


async def test_tokens_are_estimated_then_corrected_and_refunds_cost_nothing() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    bob = [(("user", "bob"), {"tpm": 1000.0, "rpm": 5.0})]
    grant = await limiter.acquire(bob, 100)  # the prompt estimate
    limiter.settle(grant, 1500)  # it really used 1500: the minute is over its limit
    with pytest.raises(RateLimited) as exc:
        await limiter.acquire(bob, 100)
    assert exc.value.key == "tpm"
    clock.t += 61
    refused = await limiter.acquire(bob, 100)
    limiter.refund(refused)
    for _ in range(5):  # the refunded request did not count against rpm
        await limiter.acquire(bob, 1)


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Stack]:
    extra = """
[limits.default_user]
rpm = 3

[limits.users.owner]
rpm = "none"  # the owner is exempt from the default

[limits.users.tiny]
tpm = 50

[limits.workspaces.acme]
rpm = 1

[limits.providers.openai]
rpm = 2

[limits.providers.anthropic]
tpm = 10
"""
    async for s in start_stack(tmp_path, extra=extra):
        yield s


async def test_user_rpm_gives_429_naming_the_limit(limited: Stack) -> None:
    carol = openai.AsyncOpenAI(base_url=f"{limited.base}/v1", api_key=limited.service.tokens.create("carol"), max_retries=0)
    for _ in range(3):
        await carol.chat.completions.create(model="auto", messages=mu.MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as err:
        await carol.chat.completions.create(model="auto", messages=mu.MSG)  # type: ignore[arg-type]
    await carol.close()
    e = err.value
    assert e.status_code == 429 and e.code == "rate_limited"
    body: Any = e.body
    assert body["param"] == "user.rpm" and body["type"] == "rate_limit_error"
    assert "user 'carol' may use 3 requests per minute (limits.default_user.rpm)" in body["message"]
    assert 1 <= int(e.response.headers["Retry-After"]) <= 60
    assert len(limited.ollama.seen) == 3  # the refused request went nowhere
    for _ in range(5):  # the owner is exempt ("none")
        await limited.client.chat.completions.create(model="auto", messages=mu.MSG)  # type: ignore[arg-type]


async def test_user_tpm_counts_what_requests_really_used(limited: Stack) -> None:
    token = limited.service.tokens.create("tiny")
    status, _, _ = await mu.post(limited, {"model": "ollama/llama3.2:latest", "messages": mu.MSG}, token)
    assert status == 200  # 11 + 7 tokens: under 50
    limited.ollama.queue(Reply(prompt_tokens=40, completion_tokens=30))
    status, _, _ = await mu.post(limited, {"model": "ollama/llama3.2:latest", "messages": mu.MSG}, token)
    assert status == 200  # admitted at 18 < 50; it used 70
    status, headers, body = await mu.post(limited, {"model": "ollama/llama3.2:latest", "messages": mu.MSG}, token)
    assert status == 429 and body["error"]["param"] == "user.tpm"
    assert "50 tokens per minute (limits.users.tiny.tpm)" in body["error"]["message"]
    assert int(headers["Retry-After"]) >= 1


async def test_workspace_rpm(limited: Stack) -> None:
    acme = {"model": "auto", "messages": mu.MSG, "omen": {"workspace": "acme"}}
    assert (await mu.post(limited, acme))[0] == 200
    status, _, body = await mu.post(limited, acme)
    assert status == 429 and body["error"]["param"] == "workspace.rpm"
    assert "workspace 'acme'" in body["error"]["message"]
    assert (await mu.post(limited, {**acme, "omen": {"workspace": "other"}}))[0] == 200


async def test_provider_limits_fail_over_or_give_429(limited: Stack) -> None:
    cloud = {"model": "auto", "messages": mu.MSG, "omen": {"intent": "cloud"}}  # openai, then anthropic
    first = await mu.post(limited, cloud)
    second = await mu.post(limited, {**cloud, "model": "openai/gpt-4o-mini", "omen": {}})
    assert first[1]["x-omen-provider"] == "openai" and second[0] == 200
    third = await mu.post(limited, cloud)  # openai is at 2 per minute: anthropic answers
    assert third[0] == 200 and third[1]["x-omen-provider"] == "anthropic"
    status, headers, body = await mu.post(limited, {"model": "openai/gpt-4o-mini", "messages": mu.MSG})
    assert status == 429 and body["error"]["code"] == "rate_limited" and "openai" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60


async def test_provider_tpm_counts_each_attempts_tokens(limited: Stack) -> None:
    limited.anthropic.enqueue(AReply([Text("hello")], input_tokens=12))
    assert (await mu.post(limited, {"model": "anthropic/claude-haiku-4-5", "messages": mu.MSG}))[0] == 200
    status, _, body = await mu.post(limited, {"model": "anthropic/claude-haiku-4-5", "messages": mu.MSG})
    assert status == 429 and "anthropic" in body["error"]["message"]
