"""Race versus single: time to first token over two upstreams of different latency.

Two fake OpenAI-compatible upstreams on 127.0.0.1 answer after 20 ms ("fast") and 60 ms
("slow"). We measure, in one run and interleaved, the client's time to first content
token through OMEN for: single on the fast one, single on the slow one, and race over
both (k=2). Target: race within 2 ms of single-on-fast. We also print what the losers
cost: the metered cost of cancelled attempts relative to the winners'.

    python bench/race.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omen_local import gc_tuning
from omen_local.config import load_config
from omen_local.observe import UsageEvent
from omen_local.secrets import SecretStore
from omen_local.service import OmenService
from omen_local.tokens import TokenBook
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI

FAST_S, SLOW_S = 0.020, 0.060


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def ttft(http: aiohttp.ClientSession, url: str, token: str, body: dict[str, object]) -> float:
    t0 = time.perf_counter()
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                first = time.perf_counter() - t0
                await resp.read()
                return first
    raise RuntimeError("no content")


async def main(rounds: int) -> None:
    async with FakeOpenAI() as fast, FakeOpenAI() as slow:
        fast.default = Reply(text="fast answer", pieces=2, delay_s=FAST_S, prompt_tokens=200, completion_tokens=20)
        slow.default = Reply(text="slow answer", pieces=2, delay_s=SLOW_S, prompt_tokens=200, completion_tokens=20)
        tmp = Path(tempfile.mkdtemp())
        cfg = tmp / "config.toml"
        price = "input = 1.0, output = 4.0"
        cfg.write_text(
            f"""
[server]
port = 0
[storage]
data_dir = "{tmp / 'data'}"
[providers.ollama]
enabled = false
[providers.openai]
enabled = false
[providers.anthropic]
enabled = false
[providers.fast]
kind = "openai"
base_url = "{fast.url}/v1"
key = ["env:BENCH_KEY"]
models = [{{ name = "gpt-4o-mini", {price} }}]
[providers.slow]
kind = "openai"
base_url = "{slow.url}/v1"
key = ["env:BENCH_KEY"]
models = [{{ name = "gpt-4o-mini", {price} }}]
[intents]
chat = ["slow/gpt-4o-mini", "fast/gpt-4o-mini"]
""",
            encoding="utf-8",
        )
        import os

        os.environ["BENCH_KEY"] = FakeOpenAI.api_key
        store = SecretStore(tmp / "data", use_keyring=False)
        service = OmenService(load_config(cfg), secrets=store, tokens=TokenBook(tmp / "data", store))
        await service.start()
        gc_tuning.settle()  # as `omen serve` does once it serves
        events: list[UsageEvent] = []
        service.hub.subscribe(lambda e: events.append(e) if isinstance(e, UsageEvent) else None)
        url = f"{service.url}/v1/chat/completions"
        token = service.tokens.owner_token
        msg = [{"role": "user", "content": "hello"}]
        scenarios = {
            "single fast": {"model": "fast/gpt-4o-mini", "messages": msg, "stream": True},
            "single slow": {"model": "slow/gpt-4o-mini", "messages": msg, "stream": True},
            "race k=2": {"model": "auto", "messages": msg, "stream": True, "omen": {"strategy": "race", "k": 2}},
        }
        times: dict[str, list[float]] = {name: [] for name in scenarios}
        async with aiohttp.ClientSession() as http:
            for body in scenarios.values():  # warm-up
                await ttft(http, url, token, body)
            events.clear()
            for _ in range(rounds):
                for name, body in scenarios.items():
                    times[name].append(await ttft(http, url, token, body))
        await service.stop()

    print(f"upstream TTFT: fast {FAST_S * 1000:.0f} ms, slow {SLOW_S * 1000:.0f} ms; {rounds} rounds, interleaved\n")
    print(f"{'scenario':<14}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, xs in times.items():
        ms = [x * 1000 for x in xs]
        print(f"{name:<14}{pct(ms, 0.5):>10.2f}{pct(ms, 0.99):>10.2f}{statistics.mean(ms):>10.2f}")
    race_p50 = pct(times["race k=2"], 0.5) * 1000
    fast_p50 = pct(times["single fast"], 0.5) * 1000
    gap = race_p50 - fast_p50
    print(f"\nrace p50 - single-fast p50: {gap:+.2f} ms (target: within 2 ms) -> {'met' if gap <= 2 else 'NOT met'}")
    race_events = [e for e in events if e.strategy == "race"]
    won = sum(e.cost_usd for e in race_events if e.outcome == "ok")
    lost = sum(e.cost_usd for e in race_events if e.outcome == "cancelled")
    n_lost = sum(1 for e in race_events if e.outcome == "cancelled")
    print(
        f"race losers: {n_lost} cancelled attempts, metered ${lost:.6f} vs winners ${won:.6f} "
        f"(+{(lost / won * 100) if won else 0:.1f}% cost overhead; losers pay their prompt)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    asyncio.run(main(parser.parse_args().rounds))
