"""Throughput of several OMEN builds against the thin proxy, in one run: is a target reachable
by *any* build on this machine, and what did the changes since a reference build cost?

Ratios to the thin proxy move with the machine (a shared VM's speed varies by 2x within an
afternoon), so a target stated as a ratio means little unless the build it was derived
from is measured beside it. This starts the thin aiohttp proxy and every ``--build`` (a
checkout with its own virtualenv: ``DIR/.venv/bin/python -m omen_local serve``) pinned to
one core (``--omen-cpu``), loads them one at a time from the other, rounds interleaved, and
prints each build's rps as a share of the proxy's (the median of the rounds' ratios) and of
the first build's, with CPU per request and any error answers (which would not be throughput).

    git worktree add /tmp/ref <commit> && python3 -m venv /tmp/ref/.venv \\
        && /tmp/ref/.venv/bin/pip install -e /tmp/ref
    python bench/builds.py --build ref=/tmp/ref --build now=. [--stream] [--rounds 5]

Every build gets the same config (``overhead.write_config``) and its own data dir; the
fake upstream, the proxy and the load generator (wrk, else the Python one) are this
checkout's. ``--env LABEL:NAME=VALUE`` sets a variable for one build only (a switch a
reference build reads). Needs taskset and two cores, like bench/overhead.py.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import (  # the sibling module, found through the path set above
    EXPLICIT,
    HERE,
    HOST,
    UPSTREAM_KEY,
    UPSTREAM_MODEL,
    Bench,
    CpuMeter,
    Endpoint,
    Latency,
    Processes,
    clean_env,
    render,
    start_upstream,
    typical,
    write_config,
)


@dataclass(frozen=True)
class Build:
    label: str
    checkout: Path
    python: Path
    env: dict[str, str]


LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def parse_builds(specs: list[str], envs: list[str]) -> list[Build]:
    """``LABEL=DIR`` specs (default: this checkout as ``now``) with their ``LABEL:NAME=VALUE`` variables."""
    extra: dict[str, dict[str, str]] = {}
    for spec in envs:
        label, _, assignment = spec.partition(":")
        name, eq, value = assignment.partition("=")
        if not label or not name or not eq:
            raise SystemExit(f"--env {spec!r}: expected LABEL:NAME=VALUE")
        extra.setdefault(label, {})[name] = value
    builds = []
    for spec in specs or [f"now={HERE.parent}"]:
        label, eq, where = spec.partition("=")
        if not eq or not LABEL.fullmatch(label) or label in ("thin", "upstream"):
            raise SystemExit(f"--build {spec!r}: expected LABEL=DIR (a label other than thin/upstream)")
        checkout = Path(where).resolve()
        venv = checkout / ".venv" / "bin" / "python"
        if not (checkout / "omen_local").is_dir():
            raise SystemExit(f"--build {spec!r}: {checkout} is not an OMEN checkout")
        env = extra.pop(label, {})
        if venv.exists():
            builds.append(Build(label, checkout, venv, env))
        elif checkout == HERE.parent:  # this checkout: this interpreter, the checkout first on the path
            builds.append(Build(label, checkout, Path(sys.executable), {"PYTHONPATH": str(checkout), **env}))
        else:  # another checkout needs its own environment (its resources, its dependencies)
            raise SystemExit(f"--build {spec!r}: {checkout} has no .venv/bin/python; make one: python3 -m venv "
                             f"{checkout}/.venv && {checkout}/.venv/bin/pip install -e {checkout}")
    if extra:
        raise SystemExit(f"--env names builds that are not given: {', '.join(sorted(extra))}")
    if len({b.label for b in builds}) != len(builds):
        raise SystemExit("--build labels must differ")
    return builds


def check_source(build: Build) -> None:
    """Refuse to measure a build whose interpreter would import another checkout's omen_local
    (or none): each row must be the code its label names."""
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"} | build.env
    code = "import omen_local; print(omen_local.__file__)"
    try:
        out = subprocess.run([str(build.python), "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(f"build {build.label}: {build.python} cannot be run: {exc}") from None
    found = (out.stdout.strip().splitlines() or [""])[-1]  # the last line: a .pth may print before it
    if out.returncode != 0 or found in ("", "None"):  # None: a folder without __init__.py (a namespace package)
        last = (out.stderr.strip().splitlines() or ["no omen_local package there"])[-1]
        raise SystemExit(f"build {build.label}: {build.python} cannot import omen_local from {build.checkout}: {last}")
    where = Path(found).resolve().parent
    if where != build.checkout / "omen_local":
        raise SystemExit(f"build {build.label}: {build.python} imports omen_local from {where}, not from {build.checkout}")


def start(args: argparse.Namespace, builds: list[Build], tmp: Path, procs: Processes) -> tuple[dict[str, Endpoint], dict[str, int], dict[int, int]]:
    env = clean_env()
    up, up_port = start_upstream(procs, args.chunks, args.load_cpu)
    thin, m = procs.start(
        "thin",
        [sys.executable, str(HERE / "_thinproxy.py"), "--upstream", f"http://{HOST}:{up_port}/v1"],
        cpu=args.omen_cpu,
        env=env,
        ready=r"READY (\d+)",
    )
    endpoints = {"thin": Endpoint("thin", int(m.group(1)), UPSTREAM_KEY, UPSTREAM_MODEL)}
    pids = {"thin": thin.pid}
    known = {up.pid: args.load_cpu, thin.pid: args.omen_cpu}
    for build in builds:
        cfg = tmp / f"config-{build.label}.toml"
        write_config(cfg, tmp / f"data-{build.label}", up_port)
        token = "omen-bench-" + secrets.token_urlsafe(24)
        benv = {**env, "OMEN_TOKEN": token, "OMEN_SECRETS": "file", "BENCH_KEY": UPSTREAM_KEY,
                "OMEN_LOG_DIR": str(tmp / f"log-{build.label}"), **build.env}
        if "PYTHONPATH" not in build.env:
            benv.pop("PYTHONPATH", None)  # each build imports its own omen_local (check_source)
        proc, m = procs.start(
            build.label,
            [str(build.python), "-m", "omen_local", "--config", str(cfg), "--log-level", "warning", "serve", "--port", "0"],
            cpu=args.omen_cpu,
            env=benv,
            ready=r"serving the OpenAI API at http://[^\s/]+:(\d+)/v1",
        )
        endpoints[build.label] = Endpoint(build.label, int(m.group(1)), token, EXPLICIT)
        pids[build.label] = proc.pid
        known[proc.pid] = args.omen_cpu
    return endpoints, pids, known


def run(args: argparse.Namespace, builds: list[Build], tmp: Path, procs: Processes) -> int:
    endpoints, pids, known = start(args, builds, tmp, procs)
    bench = Bench(endpoints, pids, CpuMeter(args.omen_cpu, args.load_cpu, known), 0, 0, args.duration,
                  shutil.which("wrk") is not None, tmp, args.load_cpu)
    conns = 16 if args.stream else 64
    labels = ["thin", *(b.label for b in builds)]
    for label in labels:  # warm up: connections, caches, the usage writer's first batches
        bench.load(label, args.stream, conns, duration=1.0)
    rounds: dict[str, list[Latency]] = {label: [] for label in labels}
    for r in range(args.rounds):
        order = labels[r % len(labels):] + labels[: r % len(labels)]  # rotate: no target always goes first
        for label in order:
            rounds[label].append(bench.load(label, args.stream, conns))
        print(f"round {r + 1}: " + ", ".join(f"{label} {rounds[label][-1].rps or 0:.0f} rps" for label in labels), flush=True)
    first = builds[0].label
    medians = {label: typical(rounds[label]) for label in labels}
    rows = []
    for label in labels:
        lat = medians[label]
        share = [(x.rps or 0) / t.rps for x, t in zip(rounds[label], rounds["thin"], strict=True) if t.rps]
        base = medians[first].rps
        cpu, thin_cpu = lat.cpu_us, medians["thin"].cpu_us
        rows.append([
            label,
            f"{lat.rps or 0:.0f}",
            f"{statistics.median(share):.0%} [{', '.join(f'{x:.2f}' for x in share)}]" if share else "-",
            f"{(lat.rps or 0) / base:.2f}" if label != "thin" and base else "-",
            f"{cpu:.0f}" if cpu is not None else "-",
            f"{cpu / thin_cpu:.2f}x" if cpu is not None and thin_cpu else "-",
            str(sum(x.errors for x in rounds[label])),
        ])  # fmt: skip
    kind = f"streamed (c={conns}, {args.chunks} chunks)" if args.stream else f"non-streamed (c={conns})"
    print(f"\n{kind}, {args.rounds} rounds of {args.duration:g} s; medians, every round's share of the proxy in brackets")
    print(render(["target", "rps", "of the proxy", f"of {first}", "CPU us/req", "CPU vs proxy", "errors"], rows))
    failed = [row[0] for row in rows if row[-1] != "0"]
    if failed:
        print(f"WARNING: error answers from {', '.join(failed)}: their rps is not throughput (see the logs in the temp dir)")
    for build in builds:
        print(f"{build.label}: {build.checkout} ({build.python}){' ' + str(build.env) if build.env else ''}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Throughput of OMEN builds against the thin proxy, in one run.")
    parser.add_argument("--build", action="append", default=[], help="LABEL=DIR, an OMEN checkout (its .venv if it has one); repeat")
    parser.add_argument("--env", action="append", default=[], help="LABEL:NAME=VALUE, a variable for one build; repeat")
    parser.add_argument("--stream", action="store_true", help="streamed answers (c=16) instead of whole ones (c=64)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per load run (default 2)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per upstream stream (default 20)")
    parser.add_argument("--omen-cpu", type=int, default=0, help="core for the builds and the proxy (default 0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for the upstream and the load (default 1)")
    args = parser.parse_args()
    builds = parse_builds(args.build, args.env)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration above 0")
    if args.omen_cpu == args.load_cpu:
        parser.error("--omen-cpu and --load-cpu must differ (the load must not share the servers' core)")
    for build in builds:
        check_source(build)
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("needs taskset and two cores (the builds on one, the load on the other)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {args.load_cpu})
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="omen-builds-") as t:
        procs = Processes(Path(t))
        try:
            return run(args, builds, Path(t), procs)
        except KeyboardInterrupt:
            return 130
        finally:
            procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
