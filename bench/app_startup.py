"""The tray app: start-up to a serving endpoint, and OMEN's added latency hosted vs headless.

    python bench/app_startup.py [--runs 5] [--requests 300]

1. Start-up: from launching ``python -m app`` (offscreen Qt) to the first successful
   ``GET /health``, against launching ``omen serve`` the same way (target: app < 1.5 s).
2. Added latency: the same streamed chat requests, one at a time on keep-alive
   connections, straight to a fast fake upstream (``_upstream.py``) and through OMEN:
   headless (``omen serve``) and hosted by the app, both running at once and asked in
   turn (a, b, a, b...) so the machine's noise falls on both alike; hosted in the tray,
   with the dashboard open (redrawing once a second, as it does), and redrawing 20 times
   a second as a stress case. OMEN's added latency is the median through OMEN minus the
   median direct; the ratio hosted/headless should stay within 1.10.

Prints numbers and ratios from the same run; asserts nothing (machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from overhead import HOST, SyncClient, chat_body, clean_env, http_request, write_config  # noqa: E402

MODEL = "openai/gpt-4o-mini"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_health(port: int, proc: subprocess.Popen[bytes], limit_s: float = 30.0) -> float | None:
    """Seconds until /health answered (measured from the caller's t0), or None."""
    end = time.perf_counter() + limit_s
    while time.perf_counter() < end:
        if proc.poll() is not None:
            return None
        if health(port):
            return time.perf_counter()
        time.sleep(0.005)
    return None


class Run:
    def __init__(self, tmp: Path, upstream_port: int) -> None:
        self.tmp = tmp
        self.upstream_port = upstream_port
        self.n = 0

    def env(self, **extra: str) -> dict[str, str]:
        self.n += 1
        base = self.tmp / f"run{self.n}"
        (base / "run").mkdir(parents=True, mode=0o700)
        env = clean_env()
        env.update(QT_QPA_PLATFORM="offscreen", OMEN_SECRETS="file", BENCH_KEY="sk-bench",
                   XDG_RUNTIME_DIR=str(base / "run"), OMEN_LOG_DIR=str(base / "logs"),
                   OMEN_APP_PREFS=str(base / "app.json"), XDG_CONFIG_HOME=str(base / "cfg"),
                   XDG_DATA_HOME=str(base / "data-home"), OMEN_TOKEN="omen-bench-token", **extra)
        return env

    def config(self, port: int) -> Path:
        path = self.tmp / f"config{self.n}.toml"
        write_config(path, self.tmp / f"data{self.n}", self.upstream_port)
        text = path.read_text().replace("port = 0", f"port = {port}", 1)
        path.write_text(text)
        return path

    def launch(self, kind: str, extra_env: dict[str, str] | None = None, window: bool = False
               ) -> tuple[subprocess.Popen[bytes], int, float | None]:
        env = self.env(**(extra_env or {}))
        port = free_port()
        cfg = self.config(port)
        if kind == "app":
            cmd = [sys.executable, "-m", "app", "--config", str(cfg), "--no-glyph"]
            cmd += ["--no-tray"] if window else ["--minimized", "--assume-tray"]  # offscreen Qt has no tray
        else:
            cmd = [sys.executable, "-m", "omen_local", "serve", "--config", str(cfg)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = wait_health(port, proc)
        return proc, port, None if ready is None else ready - t0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def latencies(ports: list[int], token: str, n: int) -> list[list[float]]:
    """``n`` streamed requests to each port, interleaved (a, b, a, b, ...); ms per request."""
    model = MODEL if token != "direct" else "gpt-4o-mini"
    clients = [SyncClient(port) for port in ports]
    requests = [http_request(port, chat_body(model, True), token) for port in ports]
    try:
        for _ in range(30):  # warm-up
            for c, r in zip(clients, requests, strict=True):
                c.roundtrip(r, True)
        out: list[list[float]] = [[] for _ in ports]
        for _ in range(n):
            for i, (c, r) in enumerate(zip(clients, requests, strict=True)):
                _first, end = c.roundtrip(r, True)
                out[i].append(end / 1e6)
        return out
    finally:
        for c in clients:
            c.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="start-ups of each kind")
    parser.add_argument("--requests", type=int, default=300, help="requests per latency series")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after /health before measuring with the dashboard open")
    args = parser.parse_args()

    up = subprocess.Popen([sys.executable, str(HERE / "_upstream.py")], stdout=subprocess.PIPE, env=clean_env())
    assert up.stdout is not None
    m = re.search(rb"READY (\d+)", up.stdout.readline())
    if not m:
        print("the fake upstream did not start", file=sys.stderr)
        return 1
    upstream_port = int(m.group(1))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; shared and noisy: compare ratios "
          "within this run, not across runs\n")
    with tempfile.TemporaryDirectory(prefix="omen-app-bench-") as tmp:
        run = Run(Path(tmp), upstream_port)
        try:
            # ---- start-up
            times: dict[str, list[float]] = {"omen serve": [], "omen app": []}
            for _ in range(args.runs):
                for kind, label in (("serve", "omen serve"), ("app", "omen app")):
                    proc, _port, took = run.launch(kind)
                    if took is not None:
                        times[label].append(took)
                    stop(proc)
            print("start-up to the first successful GET /health (launch of the process included)")
            for label, values in times.items():
                if values:
                    print(f"  {label:<11} median {statistics.median(values) * 1000:7.0f} ms   "
                          f"min {min(values) * 1000:6.0f}   max {max(values) * 1000:6.0f}   ({len(values)} runs)")
                else:
                    print(f"  {label:<11} did not start")
            if times["omen app"] and times["omen serve"]:
                a, s = statistics.median(times["omen app"]), statistics.median(times["omen serve"])
                print(f"  app / serve: {a / s:.2f}   target for the app: < 1500 ms "
                      f"({'met' if a < 1.5 else 'NOT met'})\n")

            # ---- added latency: each hosted variant interleaved with a headless OMEN, request by
            # request, so the machine's noise falls on both alike
            token = "omen-bench-token"
            direct = latencies([upstream_port], "direct", args.requests)[0]
            d = statistics.median(direct)
            print(f"streamed request, one at a time, {args.requests} per series, interleaved (median total time)")
            print(f"  direct to the upstream              {d:7.3f} ms")
            for label, env, window in (
                ("hosted by the app (in the tray)", None, False),
                ("hosted, dashboard open, redrawing 1/s", {"OMEN_DASHBOARD_INTERVAL_MS": "1000"}, True),
                ("hosted, dashboard redrawing 20/s (stress)", {"OMEN_DASHBOARD_INTERVAL_MS": "50"}, True),
            ):
                serve, serve_port, t1 = run.launch("serve")
                app, app_port, t2 = run.launch("app", env, window)
                try:
                    if t1 is None or t2 is None:
                        print(f"  {label}: did not start")
                        continue
                    if window:  # the app serves before it builds the window: measure once it is up
                        time.sleep(args.settle)
                    headless, hosted = latencies([serve_port, app_port], token, args.requests)
                finally:
                    stop(serve)
                    stop(app)
                h, a = statistics.median(headless), statistics.median(hosted)
                print(f"  headless (omen serve)               {h:7.3f} ms   p90 {p90(headless):7.3f}   adds {h - d:6.3f} ms")
                print(f"  {label:<36}{a:7.3f} ms   p90 {p90(hosted):7.3f}   adds {a - d:6.3f} ms"
                      f"   hosted/headless added: {(a - d) / (h - d):.2f} (target <= 1.10)")
        finally:
            up.terminate()
            up.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
