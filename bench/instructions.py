"""CPU per request counted in instructions: OMEN against the thin proxy, free of machine noise.

``bench/overhead.py`` measures CPU time per request from /proc, and on a shared VM the same
code varies by a third between processes. This benchmark runs each server under valgrind's
callgrind, which counts the instructions the process executes (all its threads: OMEN's
usage writer included), and asks it for the count of exactly the requests sent: warm up,
let background work settle, zero the counters (``callgrind_control -z``), send N requests
over closed-loop keep-alive connections, let the metering writer commit them, dump
(``callgrind_control -d``). The same code gives the same count to within a fraction of
a percent from run to run, so small changes can be compared. Instructions are not time
(cache misses and the kernel's work are not in them), so this complements
``overhead.py``; it does not replace it.

Usage: ``python bench/instructions.py [--requests N] [--chunks N] [--only thin,omen]``.
Needs valgrind (``apt install valgrind``). Takes about five minutes with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import (  # the sibling module, found through the path set above
    CLAUDE,
    EXPLICIT,
    HERE,
    HOST,
    LLAMA,
    UPSTREAM_KEY,
    UPSTREAM_MODEL,
    Processes,
    Reply,
    chat_body,
    clean_env,
    http_request,
    write_config,
)


@dataclass(frozen=True)
class Case:
    label: str  # what the table calls it
    server: str  # "thin" or "omen"
    model: str
    stream: bool
    conns: int


CASES = (
    Case("non-stream c=64", "thin", UPSTREAM_MODEL, False, 64),
    Case("stream c=16", "thin", UPSTREAM_MODEL, True, 16),
    Case("non-stream c=64", "omen", EXPLICIT, False, 64),
    Case("stream c=16", "omen", EXPLICIT, True, 16),
    Case("stream c=16, Anthropic upstream", "omen", CLAUDE, True, 16),
    Case("stream c=16, Ollama upstream", "omen", LLAMA, True, 16),
)


class _Conn(asyncio.Protocol):
    """One closed-loop keep-alive connection; sends until the shared budget is spent."""

    def __init__(self, request: bytes, stream: bool, budget: list[int], done: asyncio.Future[None]) -> None:
        self.request, self.stream, self.budget, self.done = request, stream, budget, done
        self.transport: asyncio.Transport | None = None
        self.reply = Reply()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._next()

    def _next(self) -> None:
        assert self.transport is not None
        if self.budget[0] <= 0:
            self.transport.close()
            return
        self.budget[0] -= 1
        self.reply = Reply()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.reply.feed(data)
        if self.reply.done:
            self.reply.check(self.stream)
            self.budget[1] += 1
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.budget[1] >= self.budget[2] and not self.done.done():
            self.done.set_result(None)
        elif exc is not None and not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost: {exc}"))


async def _send(port: int, token: str, model: str, stream: bool, conns: int, n: int) -> None:
    """Send exactly ``n`` requests over ``conns`` connections; return once all are answered."""
    loop = asyncio.get_running_loop()
    request = http_request(port, chat_body(model, stream), token)
    budget = [n, 0, n]  # left to send, answered, total
    done: asyncio.Future[None] = loop.create_future()
    for _ in range(min(conns, n)):
        await loop.create_connection(lambda: _Conn(request, stream, budget, done), HOST, port)
    await asyncio.wait_for(done, timeout=3600)
    if budget[1] != n:
        raise RuntimeError(f"{budget[1]} of {n} requests answered")


def send(port: int, token: str, model: str, stream: bool, conns: int, n: int) -> None:
    asyncio.run(_send(port, token, model, stream, conns, n))


def callgrind(pid: int, command: str) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True, timeout=120)


def dumped_total(out_dir: Path, pid: int, before: set[Path]) -> int:
    """The instruction count of the dump just written (``totals:`` of the newest dump file)."""
    for _ in range(200):
        new = sorted(set(out_dir.glob(f"cg.*.{pid}.*")) - before, key=lambda p: p.stat().st_mtime)
        if new:
            text = new[-1].read_text(errors="replace")
            m = re.search(r"^totals:\s*(\d+)", text, re.M) or re.search(r"^summary:\s*(\d+)", text, re.M)
            if m:
                return int(m.group(1))
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def measure(pid: int, out_dir: Path, port: int, token: str, case: Case, n: int, settle: float) -> float:
    """Instructions per request for ``n`` requests of ``case`` (after a warm-up)."""
    send(port, token, case.model, case.stream, case.conns, max(case.conns * 2, n // 10))
    time.sleep(settle)  # the warm-up's usage commits happen outside the window
    callgrind(pid, "-z")
    send(port, token, case.model, case.stream, case.conns, n)
    time.sleep(settle)  # these requests' usage commits happen inside it
    before = set(out_dir.glob(f"cg.*.{pid}.*"))
    callgrind(pid, "-d")
    return dumped_total(out_dir, pid, before) / n


def start(procs: Processes, name: str, argv: list[str], cpu: int, env: dict[str, str], ready: str, out: Path) -> tuple[int, int]:
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.{name}.%p", "--dump-instr=no", "--dump-line=no"]
    proc, m = procs.start(name, [*vg, *argv], cpu=cpu, env=env, ready=ready, timeout=300)
    return proc.pid, int(m.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per case (default 1000)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds for background work around a window")
    parser.add_argument("--only", default="thin,omen", help="servers to measure (default thin,omen)")
    parser.add_argument("--case", default="", help="only the cases whose label contains this")
    parser.add_argument("--keep", type=Path, help="keep callgrind's dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind: apt install valgrind")
        return 2
    servers = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="omen-instr-") as tmp_name:
        tmp = Path(tmp_name)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep.resolve()
        procs = Processes(tmp)
        try:
            env = clean_env()
            _, m = procs.start(
                "upstream",
                [sys.executable, str(HERE / "_upstream.py"), "--chunks", str(args.chunks)],
                cpu=1,
                env=env,
                ready=r"READY (\d+)",
            )
            up_port = int(m.group(1))
            cfg = tmp / "config.toml"
            write_config(cfg, tmp / "data", up_port)
            token = "omen-bench-instructions-token"
            found: dict[tuple[str, str], float] = {}
            if "thin" in servers:
                pid, port = start(procs, "thin", [sys.executable, str(HERE / "_thinproxy.py"), "--upstream", f"http://{HOST}:{up_port}/v1"],
                                  0, env, r"READY (\d+)", tmp)  # fmt: skip
                for case in CASES:
                    if case.server == "thin" and args.case in case.label:
                        found[("thin", case.label)] = measure(pid, tmp, port, UPSTREAM_KEY, case, args.requests, args.settle)
            if "omen" in servers:
                omen_env = {**env, "OMEN_TOKEN": token, "OMEN_SECRETS": "file", "BENCH_KEY": UPSTREAM_KEY}
                argv = [sys.executable, "-m", "omen_local", "--config", str(cfg), "--log-level", "warning", "serve", "--port", "0"]
                pid, port = start(procs, "omen", argv, 0, omen_env, r"serving the OpenAI API at http://[^\s/]+:(\d+)/v1", tmp)
                for case in CASES:
                    if case.server == "omen" and args.case in case.label:
                        found[("omen", case.label)] = measure(pid, tmp, port, token, case, args.requests, args.settle)
        finally:
            procs.stop_all()
    print(f"Instructions per request (callgrind, all threads; {args.requests} requests per case, {args.chunks} chunks per stream)")
    print(f"{'case':<34} {'thin proxy':>12} {'OMEN':>12} {'OMEN/thin':>10}")
    for case in CASES:
        if case.server != "omen":
            continue
        thin_label = "stream c=16" if case.stream else "non-stream c=64"
        t, o = found.get(("thin", thin_label)), found.get(("omen", case.label))
        ratio = f"{o / t:.2f}x" if t and o else "-"
        print(f"{case.label:<34} {t / 1000 if t else 0:>11,.0f}k {o / 1000 if o else 0:>11,.0f}k {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
