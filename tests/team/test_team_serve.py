"""Three real ``omen serve`` processes on one team (real PostgreSQL, real Redis, a fake OpenAI process).

The proof of the shared books: a 150-way concurrent race for one daily quota, spread over
the three instances, admits what the quota holds and no more than one reservation beyond
it (three unshared ledgers would admit three times as much); and each instance's
``/v1/usage`` answers the same team totals, equal to what clients were answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.fake_openai import FakeOpenAI

TOKEN = "omen-team-test-token"
OUT_PRICE = 1000.0  # USD per million output tokens: the fake's 7 completion tokens cost 0.007
EACH = 7 * OUT_PRICE / 1e6
QUOTA_REQUESTS = 10
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers")


QUOTA = f"""
[quotas.default_user]
daily_usd = {QUOTA_REQUESTS * EACH!r}
"""


def _config(path: Path, upstream: str, db: str, redis_url: str, instance: str, extra: str = QUOTA) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = path / "config.toml"
    config.write_text(
        f"""
[server]
port = 0
[storage]
data_dir = "{path / 'data'}"
[team]
database_url = "{db}"
redis_url = "{redis_url}"
instance = "{instance}"
[providers.ollama]
enabled = false
[providers.anthropic]
enabled = false
[providers.openai]
base_url = "{upstream}/v1"
key = ["env:OPENAI_API_KEY"]
[intents]
chat = ["openai/gpt-4o-mini"]
[pricing."gpt-4o-mini"]
input = 0.0
output = {OUT_PRICE}
{extra}
""",
        encoding="utf-8",
    )
    return config


def _spawn(argv: list[str], **env_extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMEN_CONFIG", "ANTHROPIC_API_KEY")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file", OPENAI_API_KEY=FakeOpenAI.api_key)
    env.update(env_extra)
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _first_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    first = await asyncio.to_thread(proc.stdout.readline)
    match = re.search(r"(http://127\.0\.0\.1:\d+)", first)
    if not match:
        err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
        raise AssertionError(f"no URL from {proc.args}: {first!r} {err}")
    return match.group(1)


@contextlib.asynccontextmanager
async def _processes(*argvs: list[str]) -> AsyncIterator[list[str]]:
    procs = [_spawn(argv) for argv in argvs]  # started together: the migrations race
    try:
        yield list(await asyncio.gather(*(_first_url(p) for p in procs)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _usage(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/usage", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_three_instances_share_one_quota_and_one_set_of_books(
    team_db: str, team_redis: str, tmp_path: Path
) -> None:
    fake = [sys.executable, "-m", "tests.fakes.serve", "openai", "--port", "0"]
    async with _processes(fake) as (upstream,):
        serve = [
            [sys.executable, "-m", "omen_local", "serve", "--config",
             str(_config(tmp_path / f"i{i}", upstream, team_db, team_redis, f"inst-{i}")), "--log-level", "warning"]
            for i in range(3)
        ]  # fmt: skip
        async with _processes(*serve) as bases, aiohttp.ClientSession() as http:
            start = asyncio.Event()
            statuses: list[int] = []

            async def one(i: int) -> None:
                body = {"model": "auto", "messages": [{"role": "user", "content": f"race {i}"}], "max_tokens": 7}
                await start.wait()
                async with http.post(
                    f"{bases[i % 3]}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    payload = await resp.json()
                    statuses.append(resp.status)
                    if resp.status == 402:
                        assert payload["error"]["code"] == "quota_exceeded", payload
                    else:
                        assert resp.status == 200, payload
                        assert payload["usage"]["completion_tokens"] == 7

            tasks = [asyncio.create_task(one(i)) for i in range(150)]
            start.set()
            await asyncio.gather(*tasks)
            answered = statuses.count(200)
            assert statuses.count(402) == 150 - answered
            # The quota holds QUOTA_REQUESTS requests; overspend at most one reservation, team-wide.
            assert QUOTA_REQUESTS - 1 <= answered <= QUOTA_REQUESTS + 1, statuses
            # Each instance's reads include its own writes at once; its teammates' arrive within their
            # writers' linger: poll (with a deadline) until every instance has seen every answer.
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                totals = [(await _usage(http, base))["total"] for base in bases]
                if all(t["requests"] == answered for t in totals) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            for total in totals:  # every instance answers for the team, and the books equal the answers
                assert total["requests"] == answered
                assert total["cost_usd"] == pytest.approx(answered * EACH)
                assert total["cost_usd"] <= QUOTA_REQUESTS * EACH + EACH + 1e-9
            async with http.get(f"{bases[2]}/v1/usage/instances", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200
                rows = (await resp.json())["data"]
            assert {row["instance"] for row in rows} <= {"inst-0", "inst-1", "inst-2"}
            assert sum(row["requests"] for row in rows) == answered
            assert sum(row["cost_usd"] for row in rows) == pytest.approx(answered * EACH)
            async with http.get(f"{bases[0]}/v1/omen/status", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                status = await resp.json()
            team = status["metering"]["team"]
            assert team["instance"] == "inst-0"
            async with http.get(f"{bases[1]}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
            assert {s.labels["store"]: s.value for s in families["omen_team_store_up"].samples} == {
                "database": 1.0, "quotas": 1.0, "rate_limits": 1.0,
            }  # fmt: skip
            assert team["quotas"]["state"] == "ok" and team["database"]["state"] == "ok"
            # /metrics on each instance: its own counters, which add up to the team's rows; the quota
            # gauge is the team's (read from Redis), the same on every instance.
            served = 0.0
            for base in bases:
                deadline = asyncio.get_running_loop().time() + 15
                while True:
                    async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
                    gauge = {(s.labels["name"], s.labels["limit"]): s.value for s in families["omen_quota_used"].samples}
                    if gauge.get(("owner", "daily_usd")) == pytest.approx(answered * EACH):
                        break
                    assert asyncio.get_running_loop().time() < deadline, gauge  # charges settle in the background
                    await asyncio.sleep(0.05)
                served += sum(s.value for s in families["omen_requests"].samples
                              if s.name == "omen_requests_total" and s.labels["outcome"] == "ok")  # fmt: skip
            assert served == answered


async def test_three_instances_share_one_provider_rpm(team_db: str, team_redis: str, tmp_path: Path) -> None:
    """A shared RPM of 60 for the provider key admits 60 of 150 simultaneous requests across the three."""
    fake = [sys.executable, "-m", "tests.fakes.serve", "openai", "--port", "0"]
    limits = "[limits.providers.openai]\nrpm = 60\n"
    async with _processes(fake) as (upstream,):
        serve = [
            [sys.executable, "-m", "omen_local", "serve", "--config",
             str(_config(tmp_path / f"i{i}", upstream, team_db, team_redis, f"inst-{i}", limits)), "--log-level", "error"]
            for i in range(3)
        ]  # fmt: skip
        async with _processes(*serve) as bases, aiohttp.ClientSession() as http:
            start = asyncio.Event()
            statuses: list[int] = []

            async def one(i: int) -> None:
                body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"rpm {i}"}]}
                await start.wait()
                async with http.post(
                    f"{bases[i % 3]}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    payload = await resp.json()
                    statuses.append(resp.status)
                    if resp.status != 200:
                        assert resp.status == 429, payload
                        assert "rate limit" in payload["error"]["message"]

            tasks = [asyncio.create_task(one(i)) for i in range(150)]
            start.set()
            await asyncio.gather(*tasks)
            assert statuses.count(200) == 60, statuses  # one minute, one limit, three instances
            assert statuses.count(429) == 90


async def test_three_instances_share_one_provider_tpm(team_db: str, team_redis: str, tmp_path: Path) -> None:
    """A shared TPM for the provider key: requests sent one after another, round robin over the three
    instances, are admitted until the team's minute holds the limit's tokens, then refused by every one.

    Each answer costs 18 tokens (the fake's 11 prompt + 7 completion), counted in the provider's minute
    in Redis when the attempt reports; a TPM of 180 admits 10 (the 10th brings the minute to 180). Three
    unshared limiters would admit 30. The one request of tolerance: an instance counts an answer's tokens
    in the background, so the next request (on another instance) may, in principle, look first.
    """
    fake = [sys.executable, "-m", "tests.fakes.serve", "openai", "--port", "0"]
    limits = "[limits.providers.openai]\ntpm = 180\n"
    async with _processes(fake) as (upstream,):
        serve = [
            [sys.executable, "-m", "omen_local", "serve", "--config",
             str(_config(tmp_path / f"i{i}", upstream, team_db, team_redis, f"inst-{i}", limits)), "--log-level", "error"]
            for i in range(3)
        ]  # fmt: skip
        async with _processes(*serve) as bases, aiohttp.ClientSession() as http:
            statuses: list[int] = []
            used = 0
            for i in range(30):
                body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"tpm {i}"}]}
                async with http.post(
                    f"{bases[i % 3]}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    payload = await resp.json()
                    statuses.append(resp.status)
                    if resp.status == 200:
                        used += payload["usage"]["total_tokens"]
                    else:
                        assert resp.status == 429, payload
                        assert "rate limit" in payload["error"]["message"], payload
                        assert int(resp.headers["Retry-After"]) >= 1
            answered = statuses.count(200)
            assert 10 <= answered <= 11, statuses  # one minute of tokens for the team, not one per instance
            assert statuses[:answered] == [200] * answered  # then every instance refuses
            assert used == answered * 18
            assert statuses.count(429) == 30 - answered
