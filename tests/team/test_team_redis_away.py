"""Redis stopped under load, with a real ``omen serve`` and a real redis-server (docs/team.md's rule).

While Redis is away: requests to a local model keep being answered; cloud requests go on
against this instance's allowance (5% of what remained of the team's daily quota when it
last saw it), then 402 ``team_allowance_spent`` with the reason in the door's error shape;
``/v1/omen/status`` says "team store unreachable since …". Redis back (restarted empty):
cloud requests are answered again, on the team's quota, without restarting OMEN.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from omen_local.secrets import SecretStore
from omen_local.tokens import TokenBook
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI
from tests.test_metering_crash import TOKEN

from .servers import start_redis
from .test_team_crash import _serve
from .test_team_serve import _first_url

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers")

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
OUT_PRICE = 1000.0  # USD per million output tokens: 7 tokens cost 0.007, worst case (max_tokens 7) too
EACH = 7 * OUT_PRICE / 1e6
DAILY = 1.0
BEFORE = 11  # cloud requests answered before Redis stops (10 on one instance, 1 on the other)
LEFT = DAILY - BEFORE * EACH  # 0.923 left when last seen (each instance's local requests see it too)
ALLOWED = int(0.05 * LEFT / EACH)  # 5% of 0.923 = 0.04615: 6 requests of 0.007 per instance


def _config(path: Path, openai: str, ollama: str, db: str, redis_url: str, instance: str = "away") -> Path:
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
base_url = "{ollama}"
[providers.anthropic]
enabled = false
[providers.openai]
base_url = "{openai}/v1"
key = ["env:OPENAI_API_KEY"]
[pricing."gpt-4o-mini"]
input = 0.0
output = {OUT_PRICE}
[quotas.default_user]
daily_usd = {DAILY}
[limits.default_user]         # a user rate limit too: without Redis it counts here, never a 503
rpm = 100000
[limits.providers.openai]
rpm = 100000
""",
        encoding="utf-8",
    )
    return config


async def _team(http: aiohttp.ClientSession, base: str, token: str = TOKEN) -> dict[str, Any]:
    async with http.get(f"{base}/v1/omen/status", headers={"Authorization": f"Bearer {token}"}) as resp:
        body: dict[str, Any] = await resp.json()
        return body["metering"]["team"]


async def _ask(http: aiohttp.ClientSession, base: str, model: str, i: int) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": f"m{i}"}], "max_tokens": 7}
    async with http.post(f"{base}/v1/chat/completions", json=body, headers=HEADERS) as resp:
        return resp.status, await resp.json()


async def test_redis_stopped_under_load_follows_the_documented_rule(team_db: str, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="omen-redis-away-") as tmp:
        rd = start_redis(Path(tmp) / "redis")
        proc = other = None
        try:
            async with FakeOpenAI() as cloud, FakeOllama(["llama3.2:latest"]) as local:
                config = _config(tmp_path / "i", cloud.url, local.url, team_db, rd.url)
                data_dir = tmp_path / "i" / "data"
                bob = TokenBook(data_dir, SecretStore(data_dir, use_keyring=False), owner_token=TOKEN).create("bob")
                proc = _serve(config)
                other = _serve(_config(tmp_path / "j", cloud.url, local.url, team_db, rd.url, "other"))
                base, other_base = await asyncio.gather(_first_url(proc), _first_url(other))
                async with aiohttp.ClientSession() as http:
                    for i in range(BEFORE - 1):
                        status, payload = await _ask(http, base, "openai/gpt-4o-mini", i)
                        assert status == 200, payload
                    status, payload = await _ask(http, other_base, "openai/gpt-4o-mini", 50)  # the other one's view
                    assert status == 200, payload

                    # Local load all along: before, during and after the outage.
                    stop_local = asyncio.Event()
                    local_statuses: list[int] = []

                    async def local_load() -> None:
                        n = 0
                        while not stop_local.is_set():
                            status, payload = await _ask(http, base, "ollama/llama3.2:latest", n)
                            assert status == 200, payload
                            local_statuses.append(status)
                            n += 1

                    loader = asyncio.create_task(local_load())
                    try:
                        deadline = time.monotonic() + 30
                        while not local_statuses:  # this instance has seen the scope after the other's request
                            assert time.monotonic() < deadline
                            await asyncio.sleep(0.02)
                        await asyncio.to_thread(rd.stop)
                        cloud_during: list[int] = []
                        refusal: dict[str, Any] = {}
                        for i in range(ALLOWED + 5):
                            status, payload = await _ask(http, base, "openai/gpt-4o-mini", 100 + i)
                            cloud_during.append(status)
                            if status != 200:
                                refusal = payload
                                break
                        # The allowance, then a 402 with the reason, in OpenAI's error shape.
                        assert cloud_during == [200] * ALLOWED + [402], cloud_during
                        error = refusal["error"]
                        assert error["code"] == "team_allowance_spent" and error["type"]
                        assert "unreachable since" in error["message"] and "5%" in error["message"]
                        assert error["param"] == "user.daily_usd"
                        team = await _team(http, base)
                        assert team["state"] == "degraded"
                        assert team["message"].startswith("team store unreachable since ")
                        assert "Redis" in team["message"]
                        assert team["quotas"]["state"] == "unreachable" and team["quotas"]["unreachable_since"]
                        assert team["rate_limits"]["state"] == "unreachable" and team["rate_limits"]["rule"]
                        allowance = team["quotas"]["allowances"]["user owner"]["daily_usd"]
                        assert allowance["allowance"] == pytest.approx(0.05 * LEFT)
                        # A client token sees the rule, not every user's allowance.
                        bobs = await _team(http, base, bob)
                        assert bobs["quotas"]["state"] == "unreachable" and "allowances" not in bobs["quotas"]
                        # The allowance is per instance: the other one spends its own share of what it saw.
                        other_statuses = []
                        for i in range(ALLOWED + 5):
                            status, payload = await _ask(http, other_base, "openai/gpt-4o-mini", 200 + i)
                            other_statuses.append(status)
                            if status != 200:
                                break
                        assert other_statuses == [200] * ALLOWED + [402], other_statuses
                        during = len(local_statuses)
                        deadline = time.monotonic() + 30
                        while len(local_statuses) < during + 5:  # local requests are still answered
                            assert time.monotonic() < deadline
                            await asyncio.sleep(0.05)

                        await asyncio.to_thread(rd.start)  # back, empty: no restart of OMEN
                        status, payload = await _ask(http, base, "openai/gpt-4o-mini", 999)
                        assert status == 200, payload  # the team's quota again (the window reloads from PostgreSQL)
                        deadline = time.monotonic() + 30
                        while (team := await _team(http, base))["state"] != "ok":  # rate limits retry Redis 5 s on
                            assert time.monotonic() < deadline, team
                            await asyncio.sleep(0.05)
                        assert team["message"] is None
                        assert team["quotas"]["state"] == "ok" and "allowances" not in team["quotas"]
                        assert team["rate_limits"]["state"] == "ok"
                    finally:
                        stop_local.set()
                        await loader
                    assert len(local_statuses) >= 10 and set(local_statuses) == {200}
        finally:
            for p in (proc, other):
                if p is not None and p.poll() is None:
                    p.terminate()
                    await asyncio.to_thread(p.wait)
            rd.stop()
