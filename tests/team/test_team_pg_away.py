"""PostgreSQL stopped under load, with a real ``omen serve``: requests keep being answered, the status
says since when the team's store is unreachable, and once it is back every answer is in the books once."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.fake_openai import FakeOpenAI
from tests.test_metering_crash import TOKEN

from .servers import start_postgres
from .test_team_crash import _config, _events, _serve
from .test_team_serve import _first_url

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers")

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def _status(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/omen/status", headers=HEADERS) as resp:
        body: dict[str, Any] = await resp.json()
        return body["metering"]["team"]


async def test_postgres_stopped_under_load_loses_nothing(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="omen-pg-away-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        proc = None
        try:
            db = pg.create_db("away")
            async with FakeOpenAI() as upstream:
                proc = _serve(_config(tmp_path / "i", upstream.url, db, "away"))
                base = await _first_url(proc)
                answered: list[str] = []
                async with aiohttp.ClientSession() as http:

                    async def burst(n: int) -> None:
                        for i in range(n):
                            body = {"model": "auto", "messages": [{"role": "user", "content": f"m{i}"}], "stream": i % 2 == 0}
                            async with http.post(f"{base}/v1/chat/completions", json=body, headers=HEADERS) as resp:
                                assert resp.status == 200, await resp.text()
                                await resp.read()
                                answered.append(resp.headers["x-omen-request-id"])

                    await asyncio.gather(*(burst(10) for _ in range(4)))
                    await asyncio.to_thread(pg.stop)
                    await asyncio.gather(*(burst(15) for _ in range(4)))  # served while the store is away
                    deadline = asyncio.get_running_loop().time() + 30
                    while (team := await _status(http, base))["database"]["state"] != "unreachable":
                        assert asyncio.get_running_loop().time() < deadline, team
                        await asyncio.sleep(0.1)
                    assert team["database"]["unreachable_since"]
                    async with http.get(f"{base}/v1/usage", headers=HEADERS) as resp:
                        assert resp.status == 503
                        assert (await resp.json())["error"]["code"] == "usage_store_unavailable"
                    await asyncio.to_thread(pg.start)  # back: no restart of OMEN
                    while True:
                        async with http.get(f"{base}/v1/usage", headers=HEADERS) as resp:
                            if resp.status == 200:
                                break
                        assert asyncio.get_running_loop().time() < deadline + 60
                        await asyncio.sleep(0.1)
                    events = await _events(http, base)  # asserts each request appears once
                    assert (await _status(http, base))["database"]["state"] == "ok"
            assert len(answered) == 100
            assert set(answered) <= set(events)
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait)
            if pg.running():
                pg.stop("immediate")
