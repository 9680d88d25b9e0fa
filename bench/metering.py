"""What metering and enforcement cost per request, and how fast rollups answer at 1M events.

Three parts, each printing its figures (nothing is asserted):

1. **Hot path, in process.** What metering adds to one request on the serving loop:
   ``admit`` (rate limits, quota reservation), ``provider_wait``, the usage sink
   (journal ``os.write`` + queue put + policy charge) for the request's events, ``release``.
   The real Metering runs, writer thread and all; the baseline is NoPolicy and no sink.
2. **End to end, A/B.** Two ``OmenService`` processes that differ only in
   ``metering=True/False``, pinned to the same core, in front of the fast fake upstream
   (``bench/_upstream.py``); one keep-alive client alternates requests between them.
3. **Rollups at scale.** N synthetic events (default 1,000,000: 30 days, 5 users, 8
   workspaces, 6 models) written through the store's own path, then the /v1/usage
   queries timed (median and worst of several runs), plus the ledger's loads (all scopes, one scope).

Usage: ``python bench/metering.py [--quick] [--events N] [--requests N] [--skip-e2e]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omen_local.caller import Caller
from omen_local.config import load_config
from omen_local.metering import Metering
from omen_local.metering import rollup as r
from omen_local.metering.store import COMPACT_EVERY, SqliteUsageStore
from omen_local.observe import AttemptStarted, Outcome, UsageEvent
from omen_local.policy import CostBound, NoPolicy, Policy
from omen_local.providers.base import Usage

HERE = Path(__file__).resolve().parent
TOKEN = "omen-bench-metering"
TARGET_ADDED_P50_MS = 0.3
TARGET_ROLLUP_MS = 50.0
LIMITS = """
[quotas.default_user]
daily_usd = 1000000
monthly_tokens = 1000000000000

[quotas.default_workspace]
monthly_usd = 1000000

[limits.default_user]
rpm = 100000000
tpm = 1000000000000

[limits.default_workspace]
rpm = 100000000

[limits.providers.openai]
rpm = 100000000
tpm = 1000000000000
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def write_config(path: Path, data_dir: Path, upstream: int | None, extra: str = "") -> Path:
    base = f"http://127.0.0.1:{upstream}/v1" if upstream else "http://127.0.0.1:9/v1"
    path.write_text(
        f"""
[server]
port = 0
[storage]
data_dir = "{data_dir}"
[providers.ollama]
enabled = false
[providers.anthropic]
enabled = false
[providers.openai]
base_url = "{base}"
[intents]
chat = ["openai/gpt-4o-mini"]
complete = ["openai/gpt-4o-mini"]
embed = ["openai/text-embedding-3-small"]
{extra}
""",
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------- 1. hot path


async def hot_path(tmp: Path, n: int, stream: bool, limits: bool) -> tuple[list[float], list[float]]:
    """Per-request microseconds with metering, and for the baseline (NoPolicy, no sink)."""
    os.environ.setdefault("OMEN_SECRETS", "file")
    config = load_config(write_config(tmp / f"hot-{stream}-{limits}.toml", tmp / f"hot-{stream}-{limits}", None, LIMITS if limits else ""))
    bound = CostBound(21, 64, 0.0001)

    async def run(policy: Policy, sink: Callable[[Any], None]) -> list[float]:
        samples = []
        for i in range(n):
            caller = Caller(f"req_{i:012d}", "alice", workspace="acme", client="bench")
            rid = caller.request_id
            started = AttemptStarted(f"{rid}.0", rid, "alice", "acme", "bench", None, "openai", "gpt-4o-mini", "single", 21)
            event = UsageEvent(
                f"{rid}.0", rid, "alice", "acme", "bench", None, "openai", "gpt-4o-mini",
                "single", Usage(21, 9), 0.0000086, 0.4, 0.9, Outcome.OK,
            )  # fmt: skip
            t0 = time.perf_counter_ns()
            await policy.admit(caller, bound)
            await policy.provider_wait("openai")
            if stream:
                sink(started)
            sink(event)
            policy.release(rid)
            samples.append((time.perf_counter_ns() - t0) / 1000)
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the loop breathe, as between real requests
        return samples

    base = await run(NoPolicy(), lambda _r: None)
    metering = Metering(config)
    await metering.start()
    try:
        metered = await run(metering.policy, metering.record)
        await metering.flush()
    finally:
        await metering.stop()
    return metered, base


# ---------------------------------------------------------------- 2. end to end


class Conn:
    """A keep-alive HTTP/1.1 client on a raw socket: as little client overhead as possible."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def roundtrip(self, request: bytes) -> None:
        self.sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        lower = head.lower()
        if b"content-length:" in lower:
            size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < size:
                body += self.sock.recv(65536)
        else:  # chunked (a stream): until the last chunk
            while not body.endswith(b"0\r\n\r\n"):
                body += self.sock.recv(65536)


def request_bytes(stream: bool) -> bytes:
    import json

    body = {"model": "auto", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 64}
    if stream:
        body["stream"] = True
    raw = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )


def start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"{cmd[1]} did not start: {line!r}")
    return proc, int(line.split()[1])


def end_to_end(tmp: Path, n: int) -> dict[str, dict[str, list[float]]]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = (lambda core: ["taskset", "-c", str(core)]) if shutil.which("taskset") and len(cores) >= 2 else (lambda core: [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMEN_")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file")
    procs = []
    try:
        upstream, up_port = start([*pin(cores[-1] if cores else 0), sys.executable, str(HERE / "_upstream.py")], env)
        procs.append(upstream)
        ports = {}
        for variant in ("on", "off"):
            cfg = write_config(tmp / f"e2e-{variant}.toml", tmp / f"e2e-{variant}", up_port)
            proc, ports[variant] = start([*pin(cores[0] if cores else 0), sys.executable, str(HERE / "_omen_variant.py"), str(cfg), variant], env)
            procs.append(proc)
        if len(cores) >= 2:
            os.sched_setaffinity(0, {cores[-1]})
        out: dict[str, dict[str, list[float]]] = {}
        for stream in (False, True):
            request = request_bytes(stream)
            conns = {v: Conn(p) for v, p in ports.items()}
            samples: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(n + n // 5):
                order = ("on", "off") if i % 2 else ("off", "on")
                for v in order:
                    t0 = time.perf_counter_ns()
                    conns[v].roundtrip(request)
                    if i >= n // 5:  # after the warm-up
                        samples[v].append((time.perf_counter_ns() - t0) / 1e6)
            out["stream" if stream else "json"] = samples
        return out
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


# ---------------------------------------------------------------- 3. rollups at scale

USERS = [("alice", ["acme", "lab"]), ("bob", ["acme"]), ("carol", ["home", "oss", "lab"]), ("dan", ["ci"]), ("owner", ["", "home", "notes"])]
MODELS = [
    ("ollama", "llama3.2:latest", 0.0),
    ("ollama", "qwen2.5-coder:7b", 0.0),
    ("openai", "gpt-4.1-mini", 1.0),
    ("openai", "gpt-4o-mini", 0.3),
    ("anthropic", "claude-haiku-4-5", 2.0),
    ("anthropic", "claude-sonnet-4-5", 6.0),
]


def synthetic(n: int, end: float, days: int = 30, seed: int = 1) -> list[UsageEvent]:
    rnd = random.Random(seed)
    start = end - days * r.DAY
    times = sorted(rnd.uniform(start, end) for _ in range(n))
    user_w = [40, 25, 15, 10, 10]
    model_w = [30, 15, 20, 15, 12, 8]
    out = []
    for i, t in enumerate(times):
        user, spaces = rnd.choices(USERS, user_w)[0]
        provider, model, price = rnd.choices(MODELS, model_w)[0]
        outcome = rnd.choices(["ok", "error", "cancelled", "budget_cut"], [92, 4, 3, 1])[0]
        prompt, completion = rnd.randint(50, 8000), rnd.randint(0, 1500)
        event = UsageEvent(
            f"req{i}.0", f"req{i}", user, rnd.choice(spaces) or None, "bench", None, provider, model, "single",
            Usage(prompt, completion, rnd.randint(0, prompt // 2)), (prompt + 4 * completion) * price * 1e-6,
            rnd.lognormvariate(5.5, 0.8), rnd.lognormvariate(7.0, 1.0), outcome, time=t,
        )  # fmt: skip
        out.append(event)
    return out


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    fn()  # a first run warms the page cache, as a server's would be
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ms), max(ms)


def rollups(tmp: Path, n: int, runs: int) -> None:
    now = time.time()
    print(f"\n3. rollups over {n:,} synthetic events (30 days up to now)")
    t0 = time.perf_counter()
    events = synthetic(n, now)
    gen = time.perf_counter() - t0
    store = SqliteUsageStore(tmp / "rollup" / "usage.db")
    store.open()
    t0 = time.perf_counter()
    with store.db.connection_context():
        for i in range(0, n, 10_000):
            store.apply([("u", i + k + 1, e) for k, e in enumerate(events[i : i + 10_000])], fold=True)
    fill = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (tmp / "rollup").iterdir()) / 1e6
    print(f"   generated in {gen:.1f} s; written in {fill:.1f} s ({n / fill:,.0f} events/s, batches of 10,000, folded); {size:.0f} MB on disk")
    with store.db.connection_context():
        rows = store.db.execute_sql("SELECT COUNT(*) FROM usage_rollup").fetchone()[0]  # type: ignore[no-untyped-call]
    print(f"   rollup rows: {rows:,}")

    def q(**params: str) -> Callable[[], Any]:
        query = r.make_query(params, now)
        return lambda: store.rollup(query)

    cases = [
        ("30 days, total", q()),
        ("30 days, group_by=user", q(group_by="user")),
        ("30 days, group_by=provider,model", q(group_by="provider,model")),
        ("30 days, group_by=day", q(group_by="day")),
        ("30 days, group_by=user,workspace,provider,model,day", q(group_by="user,workspace,provider,model,day")),
        ("30 days, user=alice, group_by=model", q(group_by="model", user="alice")),
        ("7 days, group_by=hour", q(group_by="hour", **{"from": "7d"})),
        ("30 days, group_by=hour", q(group_by="hour")),
        ("ragged: from 29d17m to 61m ago, group_by=user", q(group_by="user", **{"from": str(now - 29 * r.DAY - 17 * 60), "to": str(now - 61 * 60)})),
        ("today, group_by=provider", q(group_by="provider", **{"from": "today"})),
        ("ledger start-up (this month's spend per user/workspace)", lambda: store.spend(int(r.month_start(now) // r.DAY))),
        # As the ledger does it: on the store's reader thread, whose connection stays open.
        ("ledger reload of one user (a dropped tally)", lambda: store.read_later(store.spend_of, "user", "alice", int(r.month_start(now) // r.DAY)).result()),
        ("ledger reload of one workspace", lambda: store.read_later(store.spend_of, "workspace", "acme", int(r.month_start(now) // r.DAY)).result()),
    ]
    # A tail of events not folded yet, as a live server has between folds.
    with store.db.connection_context():
        store.apply([("u", n + k + 1, e) for k, e in enumerate(synthetic(COMPACT_EVERY - 1, now, days=0, seed=9))])
    rows_out = []
    for label, fn in cases:
        med, worst = timed(fn, runs)
        rows_out.append((label, med, worst))
    width = max(len(label) for label, _, _ in rows_out)
    print(f"   {'query (with ' + str(COMPACT_EVERY - 1) + ' events not folded yet)':<{width}}  median ms   worst ms")
    for label, med, worst in rows_out:
        mark = "" if med < TARGET_ROLLUP_MS else "  (over target)"
        print(f"   {label:<{width}}  {med:9.2f}  {worst:9.2f}{mark}")
    store.close()


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (100k events, 2,000 requests)")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    events = args.events or (100_000 if args.quick else 1_000_000)
    requests = args.requests or (2_000 if args.quick else 10_000)
    tmp = Path(tempfile.mkdtemp(prefix="omen-bench-metering-"))
    try:
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, data in {tmp}")
        print("\n1. metering on the serving loop, per request (in process, microseconds)")
        print(f"   {'case':<44}{'p50':>8}{'p99':>8}{'baseline p50':>14}{'added p50':>11}")
        for stream in (False, True):
            for limits in (False, True):
                metered, base = asyncio.run(hot_path(tmp, requests * 2, stream, limits))
                label = ("stream" if stream else "json") + (", quotas + rate limits set" if limits else ", no limits configured")
                added = pct(metered, 0.5) - pct(base, 0.5)
                print(f"   {label:<44}{pct(metered, 0.5):8.1f}{pct(metered, 0.99):8.1f}{pct(base, 0.5):14.1f}{added:11.1f}")
        if not args.skip_e2e:
            print(f"\n2. end to end, metering on vs off ({requests:,} interleaved requests each, after warm-up; ms)")
            res = end_to_end(tmp, requests)
            for kind, samples in res.items():
                on, off = samples["on"], samples["off"]
                added = pct(on, 0.5) - pct(off, 0.5)
                mark = "met" if added < TARGET_ADDED_P50_MS else "NOT met"
                print(
                    f"   {kind:<7} p50 on {pct(on, 0.5):.3f}  off {pct(off, 0.5):.3f}  added {added * 1000:+.0f} us "
                    f"(target < {TARGET_ADDED_P50_MS * 1000:.0f} us: {mark});  p99 on {pct(on, 0.99):.3f}  off {pct(off, 0.99):.3f}"
                )
        rollups(tmp, events, 5 if events >= 500_000 else 10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
