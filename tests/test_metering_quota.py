"""Quotas per user and workspace: atomic reservations, UTC windows, errors, the CLI, restarts."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from omen_local import cli, estimate
from omen_local.config import QuotaConfig, QuotaLimits
from omen_local.metering.books import QUOTAS_FILE, REFRESH_S, QuotaBook, set_quota
from omen_local.metering.ledger import LocalLedger, QuotaExceeded
from tests import metering_util as mu
from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply

OUT = 100
PROMPT = estimate.prompt_tokens({"messages": mu.MSG})
WORST = (PROMPT * 0.15 + OUT * 0.60) * 1e-6  # gpt-4o-mini, prompt + max_tokens


def utc(*ymdhms: int) -> float:
    return float(calendar.timegm((*ymdhms, 0, 0, 0)[:6]))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- the ledger alone


async def test_daily_and_monthly_windows_roll_over_at_utc_midnight() -> None:
    clock = Clock(utc(2026, 1, 31, 23, 59, 0))
    ledger = LocalLedger(clock)
    alice = ("user", "alice")
    limits = {"daily_usd": 1.0, "monthly_usd": 1.5}
    await ledger.reserve("a", [(alice, limits)], 0.9, 10)
    ledger.settle("a", 0.8, 10)
    with pytest.raises(QuotaExceeded) as exc:
        await ledger.reserve("b", [(alice, limits)], 0.3, 10)
    assert exc.value.key == "daily_usd" and exc.value.used == pytest.approx(0.8)
    assert exc.value.resets_at == utc(2026, 2, 1, 0, 0, 0)

    clock.t = utc(2026, 2, 1, 0, 0, 1)  # a new day, and a new month
    await ledger.reserve("b", [(alice, limits)], 0.9, 10)
    ledger.settle("b", 0.7, 10)
    assert ledger.used(alice) == (pytest.approx(0.7), pytest.approx(0.7), 10, 10)

    clock.t = utc(2026, 2, 2, 12, 0, 0)  # the next day: the daily window is fresh, the month is not
    with pytest.raises(QuotaExceeded) as exc:
        await ledger.reserve("c", [(alice, limits)], 0.9, 10)
    assert exc.value.key == "monthly_usd" and exc.value.resets_at == utc(2026, 3, 1, 0, 0, 0)
    assert ledger.used(alice)[0] == 0.0


async def test_a_hold_open_at_midnight_counts_in_the_new_day() -> None:
    clock = Clock(utc(2026, 3, 10, 23, 59, 59))
    ledger = LocalLedger(clock)
    bob = ("user", "bob")
    await ledger.reserve("long", [(bob, {"daily_tokens": 1000})], 0.0, 800)
    clock.t += 2  # past midnight, the request still running
    with pytest.raises(QuotaExceeded):
        await ledger.reserve("other", [(bob, {"daily_tokens": 1000})], 0.0, 300)
    ledger.settle("long", 0.0, 500)  # charged to the day it ended in
    assert ledger.used(bob)[2] == 500
    await ledger.reserve("other", [(bob, {"daily_tokens": 1000})], 0.0, 300)


def test_cli_values_override_config_key_by_key(tmp_path: Path) -> None:
    config = QuotaConfig(
        default_user=QuotaLimits(daily_usd=5.0, monthly_usd=50.0),
        users={"alice": QuotaLimits(daily_usd=1.0)},
    )
    now = [100.0]
    book = QuotaBook(config, tmp_path, clock=lambda: now[0])
    assert book.limits(("user", "alice")) == {"daily_usd": 1.0, "monthly_usd": 50.0}
    assert book.effective(("user", "alice"))["daily_usd"][1] == "quotas.users.alice.daily_usd"
    set_quota(tmp_path / QUOTAS_FILE, "user", "alice", {"monthly_usd": None, "daily_tokens": 1000})
    book.refresh()  # looked less than REFRESH_S ago: no stat yet
    assert book.limits(("user", "alice")) == {"daily_usd": 1.0, "monthly_usd": 50.0}
    now[0] += REFRESH_S
    book.refresh()
    assert book.limits(("user", "alice")) == {"daily_usd": 1.0, "daily_tokens": 1000}  # none = unlimited
    assert book.limits(("user", "zed")) == {"daily_usd": 5.0, "monthly_usd": 50.0}


# ---------------------------------------------------------------- through the server


async def _ask(stack: Stack, **extra: Any) -> Any:
    return await stack.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=mu.MSG, max_tokens=OUT, **extra  # type: ignore[arg-type]
    )


async def _spent(stack: Stack, **filters: str) -> float:
    status, body = await mu.get_json(stack, "/v1/usage", **filters)
    assert status == 200
    return float(body["total"]["cost_usd"])


async def test_100_concurrent_requests_cannot_overspend_a_nearly_spent_quota(stack: Stack) -> None:
    # Every answer costs exactly its worst case, and all 100 are in flight at once.
    stack.openai.default = Reply(prompt_tokens=PROMPT, completion_tokens=OUT)
    for _ in range(3):
        await _ask(stack)
    spent = await _spent(stack)
    assert spent == pytest.approx(3 * WORST)
    limit = spent + 10.5 * WORST  # room for 10 more, not 11
    set_quota(stack.data_dir / QUOTAS_FILE, "user", "owner", {"daily_usd": limit})
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    stack.openai.default = Reply(prompt_tokens=PROMPT, completion_tokens=OUT, delay_s=0.2)

    results = await asyncio.gather(*(_ask(stack) for _ in range(100)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 10
    assert all(isinstance(e, openai.APIStatusError) and e.status_code == 402 and e.code == "quota_exceeded" for e in refused)
    final = await _spent(stack)
    assert final <= limit + 1e-12  # and never more than one reservation over
    assert final == pytest.approx(spent + 10 * WORST)
    assert len(stack.openai.seen) == 13  # refused requests never reached the provider


async def test_quota_errors_name_the_limit_and_when_it_resets(stack: Stack) -> None:
    stack.openai.default = Reply(prompt_tokens=PROMPT, completion_tokens=OUT)
    set_quota(stack.data_dir / QUOTAS_FILE, "user", "owner", {"daily_usd": 1.5 * WORST})
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    await _ask(stack)
    with pytest.raises(openai.APIStatusError) as err:
        await _ask(stack)
    e = err.value
    assert e.status_code == 402 and e.code == "quota_exceeded"
    body: Any = e.body
    assert body["param"] == "user.daily_usd" and body["type"] == "insufficient_quota"
    message = body["message"]
    assert "the daily USD quota of user 'owner'" in message and "omen quota set --user owner" in message
    assert f"{WORST:.6g} USD used today (UTC)" in message and "resets at" in message
    assert 0 < int(e.response.headers["Retry-After"]) <= 86400
    assert e.response.headers["x-omen-request-id"].startswith("req_")

    set_quota(stack.data_dir / QUOTAS_FILE, "user", "owner", {"daily_usd": 0})
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    with pytest.raises(openai.APIStatusError) as err:
        await _ask(stack)
    assert "no requests are allowed" in err.value.body["message"]  # type: ignore[index]


@pytest.fixture
async def quotas(tmp_path: Path) -> AsyncIterator[Stack]:
    extra = """
[quotas.default_user]
daily_tokens = 500

[quotas.workspaces.acme]
monthly_usd = 0
"""
    async for s in start_stack(tmp_path, extra=extra):
        yield s


async def test_config_quotas_for_tokens_and_workspaces(quotas: Stack) -> None:
    await _ask(quotas)  # worst case ~105 tokens: fits 500
    with pytest.raises(openai.APIStatusError) as err:
        await quotas.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG, max_tokens=1000)  # type: ignore[arg-type]
    message = err.value.body["message"]  # type: ignore[index]
    assert err.value.code == "quota_exceeded" and "more than the whole daily token quota" in message
    assert "lower max_tokens" in message and "quotas.default_user.daily_tokens" in message
    assert "Retry-After" not in err.value.response.headers  # waiting would not help

    with pytest.raises(openai.APIStatusError) as err:
        await _ask(quotas, extra_body={"omen": {"workspace": "acme"}})
    assert err.value.body["param"] == "workspace.monthly_usd"  # type: ignore[index]
    await _ask(quotas, extra_body={"omen": {"workspace": "other"}})


async def test_a_budget_caps_the_reservation(stack: Stack) -> None:
    # Without max_tokens the worst case is 4096 output tokens of sonnet (~0.06 USD); a 0.005
    # budget caps the output, so the request fits a 0.01 USD quota.
    set_quota(stack.data_dir / QUOTAS_FILE, "user", "owner", {"daily_usd": 0.01})
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    with pytest.raises(openai.APIStatusError):
        await stack.client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=mu.MSG)  # type: ignore[arg-type]
    reply = await stack.client.chat.completions.create(
        model="anthropic/claude-sonnet-4-5", messages=mu.MSG, extra_body={"omen": {"budget_usd": 0.005}}  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content


async def test_cli_quota_set_reaches_the_running_server(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(stack.data_dir.parent / "config.toml")
    await _ask(stack)
    spent = await _spent(stack)
    assert cli.main(["quota", "set", "--config", config, "--user", "owner", "--daily-usd", "0"]) == 0
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    with pytest.raises(openai.APIStatusError) as err:
        await _ask(stack)
    assert err.value.code == "quota_exceeded"
    assert cli.main(["quota", "list", "--config", config]) == 0
    listing = capsys.readouterr().out
    line = next(row for row in listing.splitlines() if row.startswith("user") and "owner" in row)
    assert f"{spent:.6g} / 0" in line  # used today / limit
    assert cli.main(["quota", "clear", "--config", config, "--user", "owner"]) == 0
    mu.refresh_delay_passes(stack)  # what a running server waits before it looks at quotas.json again
    await _ask(stack)
    assert cli.main(["quota", "set", "--config", config, "--user", "owner", "--daily-tokens", "1.5"]) == 2


async def test_spend_survives_a_restart(tmp_path: Path) -> None:
    async for s in start_stack(tmp_path):
        s.openai.default = Reply(prompt_tokens=PROMPT, completion_tokens=OUT)
        for _ in range(3):
            await _ask(s)
        spent = await _spent(s)
    set_quota(tmp_path / "data" / QUOTAS_FILE, "user", "owner", {"daily_usd": spent + 0.5 * WORST})
    async for s in start_stack(tmp_path):  # a new server on the same data dir
        with pytest.raises(openai.APIStatusError) as err:
            await _ask(s)
        assert err.value.code == "quota_exceeded"
        assert f"{spent:.6g} USD used today" in err.value.body["message"]  # type: ignore[index]
