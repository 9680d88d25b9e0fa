"""kill -9 under load: every request that got an answer, or the first byte of a stream, is metered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI
from tests.waiting import DEADLINE_S

TOKEN = "omen-crash-test-token"
TEXT = "x" * 2000  # streamed in 50 pieces, 20 ms apart: about a second per stream
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def _config(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[server]
port = 0
[storage]
data_dir = "{tmp_path / 'data'}"
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
    return path


def _spawn(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMEN_CONFIG", "ANTHROPIC_API_KEY")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file", OPENAI_API_KEY=FakeOpenAI.api_key)
    return subprocess.Popen(
        [sys.executable, "-m", "omen_local", "serve", "--config", str(config), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def _serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = _spawn(config)
    assert proc.stdout is not None
    first = await asyncio.to_thread(proc.stdout.readline)  # the fake upstream keeps serving meanwhile
    match = re.search(r"(http://127\.0\.0\.1:\d+)/v1", first)
    assert match, first
    return proc, match.group(1)


async def _client(http: aiohttp.ClientSession, base: str, n: int, acked: dict[str, dict[str, Any]]) -> None:
    """Requests in a loop until the server dies; remember each one the client saw answered."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stream = n % 2 == 0
    body = {"model": "auto", "messages": [{"role": "user", "content": f"client {n}"}], "stream": stream}
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        while True:
            async with http.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp:
                assert resp.status == 200
                rid = resp.headers["x-omen-request-id"]
                if not stream:
                    await resp.json()
                    acked[rid] = {"stream": False}
                    continue
                seen = acked[rid] = {"stream": True, "chars": 0, "done": False}  # the first byte is in
                async for line in resp.content:
                    if line.startswith(b"data: [DONE]"):
                        seen["done"] = True
                    elif line.startswith(b'data: {"id"'):
                        seen["chars"] += line.count(b"x")


async def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    async with FakeOpenAI() as upstream:
        upstream.default = Reply(text=TEXT, pieces=50, chunk_delay_s=0.02, prompt_tokens=9, completion_tokens=500)
        config = _config(tmp_path, upstream.url)
        proc, base = await _serve(config)
        # Stall SQLite (as a slow disk or a long checkpoint would): the server's writer waits on
        # this lock, so every event of this run exists only in the journal when the kill comes.
        stall = sqlite3.connect(tmp_path / "data" / "usage.db", isolation_level=None)
        stall.execute("BEGIN IMMEDIATE")
        acked: dict[str, dict[str, Any]] = {}
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                clients = [asyncio.create_task(_client(http, base, n, acked)) for n in range(24)]
                deadline = time.monotonic() + 3 * DEADLINE_S  # bounds a failure only
                while time.monotonic() < deadline:  # until some answers are done and some streams are half-way
                    await asyncio.sleep(0.05)
                    done = sum(1 for a in acked.values() if not a["stream"] or a["done"])
                    halfway = sum(1 for a in acked.values() if a["stream"] and not a["done"] and a["chars"] > 800)
                    if done >= 20 and halfway >= 4:
                        break
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
                await asyncio.wait_for(asyncio.gather(*clients), DEADLINE_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            stall.rollback()
            stall.close()
        cut = {rid: a for rid, a in acked.items() if a["stream"] and not a["done"]}
        assert len(acked) >= 20 and len(cut) >= 4

        proc, base = await _serve(config)  # the restart replays the journal
        try:
            events: dict[str, dict[str, Any]] = {}
            async with aiohttp.ClientSession() as http:
                cursor: str | None = None
                while True:
                    params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                    async with http.get(f"{base}/v1/usage/events", params=params, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                        page = await resp.json()
                    events.update({e["request_id"]: e for e in page["data"]})
                    if not page["has_more"]:
                        break
                    cursor = page["next_cursor"]
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait)

    missing = set(acked) - set(events)
    assert not missing, f"{len(missing)} acknowledged requests have no usage event"
    for rid, a in acked.items():
        e = events[rid]
        if rid in cut:  # charged for what had been streamed, as of its last progress note
            assert e["outcome"] == "cancelled" and e["estimated"] is True
            assert (a["chars"] - 512 - 40) / 4 <= e["completion_tokens"] <= len(TEXT) / 4
            assert e["prompt_tokens"] > 0 and e["cost_usd"] > 0
        else:
            assert e["outcome"] == "ok" and e["estimated"] is False and e["completion_tokens"] == 500
