"""kill -9 of a team instance under load: every answered request reaches the team's books, once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import pytest

from omen_local.metering.pg_store import WRITE_LOCK
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI
from tests.test_metering_crash import TEXT, TOKEN, _client
from tests.waiting import DEADLINE_S

from .test_team_serve import _first_url, _spawn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def _config(path: Path, upstream: str, db: str, instance: str) -> Path:
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
""",
        encoding="utf-8",
    )
    return config


def _serve(config: Path) -> subprocess.Popen[str]:
    return _spawn([sys.executable, "-m", "omen_local", "serve", "--config", str(config), "--log-level", "error"], OMEN_TOKEN=TOKEN)


async def _events(http: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        async with http.get(f"{base}/v1/usage/events", params=params, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        for e in page["data"]:
            assert e["request_id"] not in events, "an event counted twice"
            events[e["request_id"]] = e
        if not page["has_more"]:
            return events
        cursor = page["next_cursor"]


async def test_kill_9_loses_nothing_and_the_restart_ships_the_journal_once(team_db: str, tmp_path: Path) -> None:
    async with FakeOpenAI() as upstream:
        upstream.default = Reply(text=TEXT, pieces=50, chunk_delay_s=0.02, prompt_tokens=9, completion_tokens=500)
        victim_cfg = _config(tmp_path / "victim", upstream.url, team_db, "victim")
        witness = _serve(_config(tmp_path / "witness", upstream.url, team_db, "witness"))
        victim = _serve(victim_cfg)
        try:
            witness_base, base = await asyncio.gather(_first_url(witness), _first_url(victim))
            # Hold the team store's write lock (as a long transaction elsewhere would): the victim's
            # writer waits on it, so this run's events exist only in its journal when the kill comes.
            stall = psycopg2.connect(team_db)
            stall.autocommit = True
            stall.cursor().execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            acked: dict[str, dict[str, Any]] = {}
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                    clients = [asyncio.create_task(_client(http, base, n, acked)) for n in range(16)]
                    deadline = time.monotonic() + 3 * DEADLINE_S  # bounds a failure only
                    while time.monotonic() < deadline:  # some answers done, some streams half-way
                        await asyncio.sleep(0.05)
                        done = sum(1 for a in acked.values() if not a["stream"] or a["done"])
                        halfway = sum(1 for a in acked.values() if a["stream"] and not a["done"] and a["chars"] > 800)
                        if done >= 12 and halfway >= 3:
                            break
                    victim.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(victim.wait)
                    await asyncio.wait_for(asyncio.gather(*clients), DEADLINE_S)
            finally:
                stall.close()  # releases the lock
            check = psycopg2.connect(team_db)
            try:
                with check.cursor() as cur:
                    cur.execute("SELECT COUNT(*) FROM usage_event WHERE instance = 'victim'")
                    assert cur.fetchone() == (0,)  # everything answered is in the victim's journal only
            finally:
                check.close()
            cut = {rid for rid, a in acked.items() if a["stream"] and not a["done"]}
            assert len(acked) >= 12 and len(cut) >= 3

            victim = _serve(victim_cfg)  # the restart ships its journal to the team's store
            await _first_url(victim)
            async with aiohttp.ClientSession() as http:
                events = await _events(http, witness_base)  # read on the other instance
        finally:
            for p in (witness, victim):
                if p.poll() is None:
                    p.terminate()
                    await asyncio.to_thread(p.wait)

    missing = set(acked) - set(events)
    assert not missing, f"{len(missing)} answered requests have no usage event"
    for rid in acked:
        e = events[rid]
        if rid in cut:  # charged at the restart for what had been streamed (estimated)
            assert e["outcome"] == "cancelled" and e["estimated"] is True and e["completion_tokens"] > 0
        else:
            assert e["outcome"] == "ok" and e["completion_tokens"] == 500
