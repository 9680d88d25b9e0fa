"""What the team stores cost: quota admission through Redis against the local ledger, and
``/v1/usage`` rollups from PostgreSQL at N events.

Starts a private PostgreSQL and Redis (tests/team/servers.py: initdb + pg_ctl, redis-server
on free ports in a temp dir) and stops them. Prints figures and ratios; asserts nothing.

1. **Admission.** ``reserve`` + ``settle`` of one request under a daily quota, sequential,
   N times: ``LocalLedger`` (in process) against ``RedisLedger`` (one EVALSHA each, over
   loopback). The p50 difference is what a team instance adds per request.
2. **Rollups.** N synthetic events (30 days, 3 users, 6 models) put into PostgreSQL, then
   a day's rollup by user and model and a month's by day, timed (median of 5) through
   the store's ``rollup`` (what ``/v1/usage`` runs). ``--load copy`` (the default) writes
   the events with one ``COPY`` and folds them into the rollup table in one pass (what
   the writer does in batches), so a million rows load in about a minute; ``--load
   store`` ships them through the writer's own path (batches of 5,000, folds), about
   3,500 events/s.
3. **Throughput.** ``omen serve`` processes on one team (PostgreSQL, Redis, a daily quota
   and a provider RPM limit so both shared paths work) in front of bench/_upstream.py:
   ``wrk`` against one instance, then against two at once (the same connections split
   between them), requests/s and the ratio; then checks that ``/v1/usage`` counted every
   answered request.

Usage: ``python bench/team.py [--requests N] [--events N] [--load copy|store]
[--seconds S] [--only admission,rollup,throughput]`` (defaults 2000, 1000000, copy, 5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omen_local.metering import rollup as r
from omen_local.metering.ledger import LocalLedger
from omen_local.metering.pg_store import PgUsageStore
from omen_local.metering.redis_ledger import RedisLedger
from omen_local.observe import UsageEvent
from tests.team.servers import Postgres, Redis, start_postgres, start_redis
from tests.test_metering_store import random_events


async def _admission(ledger: LocalLedger | RedisLedger, n: int) -> tuple[list[float], list[float]]:
    """(admission ms, charge ms) per request: reserve on the request's path; settle (in the
    background for Redis) timed to its end."""
    limits = {"daily_usd": 1e9, "monthly_usd": 1e9}
    admit, charge = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await ledger.reserve(f"r{i}", [(("user", "bench"), limits)], 0.001, 100)
        t1 = time.perf_counter()
        ledger.settle(f"r{i}", 0.001, 100)
        if isinstance(ledger, RedisLedger):
            await ledger.drain()
        admit.append((t1 - t0) * 1000)
        charge.append((time.perf_counter() - t1) * 1000)
    return admit, charge


def _p(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SPAN = 30 * r.DAY


def _spread(events: list[UsageEvent], n: int, i: int) -> None:
    for k, e in enumerate(events):  # evenly over 30 days, in order
        e.time = T0 + (i + k) / n * SPAN


def _load_store(store: PgUsageStore, n: int) -> None:
    events = sorted(random_events(n, seed=1), key=lambda e: e.time)
    with store.db.connection_context():
        for i in range(0, n, 5000):
            batch = events[i : i + 5000]
            _spread(batch, n, i)
            store.commit([("u", i + k + 1, e) for k, e in enumerate(batch)])
    store.compact()


def _load_copy(store: PgUsageStore, n: int) -> tuple[float, float]:
    """COPY ``n`` events into usage_event, then fold them into the rollups: (copy s, fold s)."""
    columns = ", ".join(f'"{c}"' for c in store.event_columns)
    t0 = time.perf_counter()
    conn = store.db.connection()
    step = 200_000
    for i in range(0, n, step):
        events = random_events(min(step, n - i), seed=i + 1)
        _spread(events, n, i)
        buf = io.StringIO()
        out = csv.writer(buf)
        for k, e in enumerate(events):
            e.attempt_id, e.request_id = f"b{i + k}.0", f"b{i + k}"
            out.writerow(["\\N" if v is None else v for v in store.row(e)])
        buf.seek(0)
        with conn.cursor() as cur:
            cur.copy_expert(f"COPY usage_event ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
        conn.commit()
    copied = time.perf_counter() - t0
    store.close()
    store.open()  # reads the new last id
    t1 = time.perf_counter()
    store.compact()
    with store.db.connection_context():
        store.db.execute_sql("ANALYZE")
    return copied, time.perf_counter() - t1


async def _rollups(pg: Postgres, tmp: str, n: int, how: str) -> None:
    db_url = pg.create_db("bench")
    store = PgUsageStore(db_url, "bench", Path(tmp))
    store.open()
    t0 = time.perf_counter()
    if how == "copy":
        copied, folded = _load_copy(store, n)
        print(f"loaded {n} events into PostgreSQL: COPY {copied:.1f} s, folding into the rollups {folded:.1f} s")
    else:
        _load_store(store, n)
        load_s = time.perf_counter() - t0
        print(f"loaded {n} events through the store's path in {load_s:.1f} s ({n / load_s:.0f}/s)")
    with store.db.connection_context():
        rows = store.db.execute_sql("SELECT COUNT(*) FROM usage_event").fetchone()[0]
        rolled = store.db.execute_sql("SELECT COUNT(*) FROM usage_rollup").fetchone()[0]
    print(f"  usage_event rows: {rows}, usage_rollup rows: {rolled}")
    times = []
    for _ in range(5):  # each rollup opens its connection (peewee's connection_context): that part alone
        t0 = time.perf_counter()
        with store.db.connection_context():
            store.db.execute_sql("SELECT 1")
        times.append((time.perf_counter() - t0) * 1000)
    print(f"  connecting (and SELECT 1), as each rollup does: median {statistics.median(times):.1f} ms")
    day0 = T0 + 15 * r.DAY
    for label, query in (
        ("a day by user and model", r.RollupQuery(day0, day0 + r.DAY, ("user", "model"))),
        ("a day by user and model, from 09:30 to 17:45", r.RollupQuery(day0 + 9.5 * r.HOUR, day0 + 17.75 * r.HOUR,
                                                                        ("user", "model"))),
        ("30 days by day", r.RollupQuery(T0, T0 + SPAN, (), "day")),
    ):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            store.rollup(query)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"rollup, {label}: median {statistics.median(times):.1f} ms, worst {max(times):.1f} ms")
    store.close()
    _http_rollup(db_url, Path(tmp))


def _http_rollup(db_url: str, tmp: Path) -> None:
    """The same day's rollup as a client gets it: GET /v1/usage from an ``omen serve`` on that database."""
    cfg = tmp / "usage-serve" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"""
[server]
port = 0
request_log = false
[storage]
data_dir = "{cfg.parent / 'data'}"
[team]
database_url = "{db_url}"
instance = "bench-reader"
[providers.ollama]
enabled = false
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMEN_")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file", PYTHONPATH=str(Path(__file__).parent.parent))
    with _procs() as procs:
        procs.append(subprocess.Popen([sys.executable, "-m", "omen_local", "serve", "--config", str(cfg),
                                       "--log-level", "error"], stdout=subprocess.PIPE, text=True, env=env))
        url = _first(procs[0], r"(http://127\.0\.0\.1:\d+)")
        query = "/v1/usage?from=2026-01-16T00:00:00Z&to=2026-01-17T00:00:00Z&group_by=user,model"
        times, groups = [], 0
        for _ in range(6):
            req = urllib.request.Request(url + query, headers={"Authorization": f"Bearer {TOKEN}"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as resp:
                groups = len(json.load(resp)["data"])
            times.append((time.perf_counter() - t0) * 1000)
        times = times[1:]  # the first opens the process's first connections
        print(f"GET /v1/usage (a day by user and model, {groups} groups) from omen serve: "
              f"median {statistics.median(times):.1f} ms, worst {max(times):.1f} ms")


# ---------------------------------------------------------------- throughput: 1 instance against 2

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT {{\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"p50_us\\":%d}}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50)))
end
"""
TOKEN = "omen-bench-team-token"


def _team_config(folder: Path, upstream: int, db: str, redis_url: str, instance: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.toml"
    cfg.write_text(f"""
[server]
port = 0
request_log = false
[storage]
data_dir = "{folder / 'data'}"
[team]
database_url = "{db}"
redis_url = "{redis_url}"
instance = "{instance}"
[providers.ollama]
enabled = false
[providers.anthropic]
enabled = false
[providers.openai]
base_url = "http://127.0.0.1:{upstream}/v1"
key = ["env:OPENAI_API_KEY"]
[intents]
chat = ["openai/gpt-4o-mini"]
[pricing."gpt-4o-mini"]
input = 0.15
output = 0.6
[quotas.default_user]
daily_usd = 1000000
[limits.providers.openai]
rpm = 100000000
""", encoding="utf-8")
    return cfg


@contextlib.contextmanager
def _procs() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _first(proc: subprocess.Popen[str], pattern: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(pattern, line)
    if m is None:
        raise RuntimeError(f"{proc.args!r}: {line!r}")
    return m.group(1)


def _wrk(urls: list[str], conns: int, seconds: int, workdir: Path) -> tuple[float, int, int, float]:
    """wrk -t1 against each URL at once (``conns`` split between them): (req/s, requests, errors, p50 ms)."""
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})
    script = workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(body=body, token=TOKEN))
    each = max(1, conns // len(urls))
    runs = [subprocess.Popen(["wrk", "-t1", f"-c{each}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script),
                              f"{u}/v1/chat/completions"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for u in urls]  # fmt: skip
    rps, requests, errors, p50 = 0.0, 0, 0, []
    for run in runs:
        out, err = run.communicate(timeout=seconds + 60)
        m = re.search(r"BENCH_RESULT (\{.*\})", out)
        if m is None:
            raise RuntimeError(f"wrk failed: {out[-500:]} {err[-500:]}")
        res = json.loads(m.group(1))
        rps += res["requests"] / (res["duration_us"] / 1e6)
        requests += res["requests"]
        errors += res["errors"]
        p50.append(res["p50_us"] / 1000)
    return rps, requests, errors, statistics.mean(p50)


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def _usage_requests(url: str) -> int:
    req = urllib.request.Request(f"{url}/v1/usage", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(json.load(resp)["total"]["requests"])


def _throughput(pg: Postgres, rd: Redis, tmp: Path, seconds: int, conns: int) -> None:
    if shutil.which("wrk") is None:
        print("throughput: skipped (wrk is not installed: apt-get install wrk)")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMEN_")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file", OPENAI_API_KEY="sk-bench", PYTHONPATH=str(Path(__file__).parent.parent))
    results = {}
    with _procs() as procs:
        upstream = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_upstream.py"), "--port", "0"],
                                    stdout=subprocess.PIPE, text=True, env=env)
        procs.append(upstream)
        port = int(_first(upstream, r"READY (\d+)"))
        for n in (2, 1):
            db = pg.create_db(f"bench_tp{n}")
            with _procs() as omens:
                for i in range(n):
                    cfg = _team_config(tmp / f"tp{n}-{i}", port, db, rd.url, f"bench-{i}")
                    omens.append(subprocess.Popen([sys.executable, "-m", "omen_local", "serve", "--config", str(cfg),
                                                   "--log-level", "error"], stdout=subprocess.PIPE, text=True, env=env))
                urls = [_first(p, r"(http://127\.0\.0\.1:\d+)") for p in omens]
                _wrk(urls, conns, 1, tmp)  # warm: connections, scripts, the quota's window
                warm = _usage_requests(urls[0])
                cpu0 = _cpu_s([p.pid for p in omens])
                rps, requests, errors, p50 = _wrk(urls, conns, seconds, tmp)
                cpu = _cpu_s([p.pid for p in omens]) - cpu0
                deadline = time.monotonic() + 30
                counted = _usage_requests(urls[0]) - warm
                while counted < requests and time.monotonic() < deadline:  # the other writer's linger
                    time.sleep(0.1)
                    counted = _usage_requests(urls[0]) - warm
                results[n] = rps
                print(f"throughput, {n} instance(s), {conns} connections, {seconds} s: {rps:.0f} req/s, "
                      f"p50 {p50:.1f} ms, {errors} errors, OMEN CPU {1000 * cpu / max(1, requests):.2f} ms/request; "
                      f"/v1/usage counted {counted} (wrk saw {requests} answers end within its {seconds} s)")
    print(f"throughput ratio, 2 instances / 1: {results[2] / results[1]:.2f}x (on {os.cpu_count()} cores, shared with "
          "PostgreSQL, Redis, the upstream and wrk)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--load", choices=["copy", "store"], default="copy")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", default="admission,rollup,throughput")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="omen-bench-team-") as tmp:
        rd = start_redis(Path(tmp) / "redis")
        pg: Postgres | None = None
        try:
            pg = start_postgres(Path(tmp) / "pg")
            if "admission" in only:
                await _admission_figures(rd, args.requests)
            if "rollup" in only:
                await _rollups(pg, tmp, args.events, args.load)
            if "throughput" in only:
                _throughput(pg, rd, Path(tmp), args.seconds, args.connections)
        finally:
            rd.stop()  # also when PostgreSQL failed to start
            if pg is not None and pg.running():
                pg.stop("immediate")


async def _admission_figures(rd: Redis, requests: int) -> None:
    local, local_charge = await _admission(LocalLedger(), requests)
    redis_ledger = RedisLedger(rd.url)
    await _admission(redis_ledger, 50)  # warm: scripts loaded, connection open
    shared, shared_charge = await _admission(redis_ledger, requests)
    await redis_ledger.aclose()
    lp50, rp50 = statistics.median(local), statistics.median(shared)
    print(f"admission (reserve), {requests} sequential requests:")
    print(f"  local ledger  p50 {lp50:.4f} ms  p99 {_p(local, 0.99):.4f} ms")
    print(f"  redis ledger  p50 {rp50:.4f} ms  p99 {_p(shared, 0.99):.4f} ms")
    print(f"  added by the team path: p50 {rp50 - lp50:.4f} ms (ratio {rp50 / lp50:.1f}x)")
    print(
        f"charge (settle, off the request's path for Redis): local p50 {statistics.median(local_charge):.4f} ms, "
        f"redis p50 {statistics.median(shared_charge):.4f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
