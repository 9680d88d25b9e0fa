"""Soak: does OMEN's memory stay flat when clients invent names?

A real ``omen serve`` (a subprocess, metering on, quotas, rate limits and session
stickiness configured so that every per-scope structure is exercised) takes N requests
from 1,000 users, each request naming a fresh random workspace and session, one in ten
asking for an invented model (404) and one in five streamed. The server's RSS is read
from /proc every 10,000 requests. Target: growth under 30 MB after warm-up.

Warm-up ends when the time-bounded structures have reached their steady size: after
WARMUP requests *and* WARMUP_S seconds (rate-limit windows hold a minute of traffic,
sticky sessions and idle quota tallies are capped at 10,000). Before that, growth is
the structures filling to their bounds; after it, growth is a leak.

    python bench/soak.py [--requests 200000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from omen_local.secrets import SecretStore  # noqa: E402
from omen_local.tokens import TokenBook  # noqa: E402

USERS = 1000
WARMUP = 20_000
WARMUP_S = 90.0
MSG = [{"role": "user", "content": "Say hello in five words."}]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(cmd: list[str], env: dict[str, str], pattern: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(pattern, line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError(f"{cmd[0]} did not start")


def write_config(tmp: Path, upstream: int) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(
        f"""
[server]
port = 0
[storage]
data_dir = "{tmp / 'data'}"
[defaults]
stickiness = "session"
health_interval_s = 3600
[providers.ollama]
enabled = false
[providers.openai]
enabled = false
[providers.anthropic]
enabled = false
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:{upstream}/v1"
models = [{{ name = "gpt-4o-mini", input = 0.15, output = 0.6 }}]
[intents]
chat = ["local/gpt-4o-mini"]
code = ["local/gpt-4o-mini"]
reasoning = ["local/gpt-4o-mini"]
vision = ["local/gpt-4o-mini"]
long_context = ["local/gpt-4o-mini"]
[quotas.default_user]
daily_usd = 1000
[quotas.default_workspace]
monthly_tokens = 1000000000
[limits.default_user]
rpm = 1000000
[limits.default_workspace]
rpm = 1000000
tpm = 1000000000
""",
        encoding="utf-8",
    )
    return cfg


async def drive(base: str, tokens: list[str], n: int, concurrency: int, pid: int) -> list[tuple[int, float, float]]:
    t0 = time.perf_counter()
    samples: list[tuple[int, float, float]] = [(0, 0.0, rss_mb(pid))]
    done = 0
    codes: dict[int, int] = {}
    rng = random.Random(7)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            invented = rng.random() < 0.1
            stream = rng.random() < 0.2
            body = {
                "model": f"local/{uuid.uuid4().hex[:12]}" if invented else "auto",
                "messages": MSG,
                "stream": stream,
                "omen": {"workspace": uuid.uuid4().hex, "session": uuid.uuid4().hex},
            }
            headers = {"Authorization": f"Bearer {rng.choice(tokens)}", "User-Agent": f"soak/{uuid.uuid4().hex[:8]}"}
            async with http.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()
                codes[resp.status] = codes.get(resp.status, 0) + 1
            done += 1
            if done % 10_000 == 0:
                samples.append((done, time.perf_counter() - t0, rss_mb(pid)))
                print(f"  {done:>7} requests  {samples[-1][1]:6.0f} s  RSS {samples[-1][2]:7.1f} MB  statuses {dict(sorted(codes.items()))}", flush=True)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="omen-soak-"))
    env = {**os.environ, "OMEN_SECRETS": "file", "OMEN_TOKEN": "omen-soak-owner"}
    upstream, up_port = start([sys.executable, str(ROOT / "bench" / "_upstream.py")], env, r"READY (\d+)")
    cfg = write_config(tmp, up_port)
    store = SecretStore(tmp / "data", use_keyring=False)
    book = TokenBook(tmp / "data", store, owner_token="omen-soak-owner")
    tokens = [book.create(f"user{i}") for i in range(USERS)]
    server, port = start(
        [sys.executable, "-m", "omen_local", "serve", "--config", str(cfg)], {**env, "OMEN_CONFIG": str(cfg)}, r":(\d+)/v1"
    )
    try:
        t0 = time.perf_counter()
        print(f"soak: {args.requests} requests, {USERS} users, random workspace/session each, 10% invented models")
        samples = asyncio.run(drive(f"http://127.0.0.1:{port}", tokens, args.requests, args.concurrency, server.pid))
        took = time.perf_counter() - t0
        warm = [(n, mb) for n, t, mb in samples if n >= WARMUP and t >= WARMUP_S]
        peak = max(mb for _, _, mb in samples)
        print(f"\n{args.requests} requests in {took:.0f} s ({args.requests / took:.0f} req/s)")
        if len(warm) < 2:
            print("the run ended before the warm-up did: run more requests")
            return
        growth = warm[-1][1] - warm[0][1]
        half = warm[len(warm) // 2]
        slope = (warm[-1][1] - half[1]) / max(1, (warm[-1][0] - half[0]) / 10_000)
        print(
            f"RSS after warm-up ({warm[0][0]} requests, >= {WARMUP_S:.0f} s): {warm[0][1]:.1f} MB; at the end: "
            f"{warm[-1][1]:.1f} MB; growth {growth:+.1f} MB (target < 30 MB); last half {slope:+.2f} MB per 10,000 "
            f"requests; peak {peak:.1f} MB"
        )
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(timeout=30)
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
