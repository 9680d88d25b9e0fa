"""What leaving the tray app open costs: idle CPU and memory of the real ``omen app``.

    python bench/app_idle.py [--settle 8] [--seconds 30]

Starts, side by side on one X desktop (Xvfb + openbox + trayer, as a user's session):
``omen serve`` (the headless router, the floor), ``omen app --minimized`` (tray only) and
``omen app`` (dashboard open), each with its own HOME, config and a fake Ollama answering
(the shipped defaults otherwise: health checks, metering). Once all three serve and have
settled, it reads each process's CPU time (/proc/PID/stat) over the same window, and its
RSS at the end, and prints them with ratios against ``omen serve``. Nothing is sent to
them: this is the cost of nothing happening. The three run at once so the machine's noise
falls on all alike.

Targets (issue 20): dashboard open <= 0.5% CPU, tray only <= 0.1%, tray-only RSS <= 110 MiB.
Prints numbers; asserts nothing (machines are noisy). CI runs it as a report
(tests/app/test_bench_app_idle.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app.xdesktop import (  # noqa: E402
    FakeUpstream,
    XDesktop,
    isolated_env,
    missing_tools,
    omen_command,
    poll,
    write_app_config,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime (all threads)


def rss_mib(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


class Subject:
    def __init__(self, name: str, base: Path, desktop: XDesktop, ollama: str, argv: list[str]) -> None:
        self.name = name
        home = base / name.replace(" ", "-")
        home.mkdir(parents=True)
        config = write_app_config(home / "config.toml", home / "data", ollama)
        self.env = isolated_env(home, desktop)
        self.log = home / "out.log"
        self.log_dir = Path(self.env["OMEN_LOG_DIR"])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*omen_command(), *argv, "--config", str(config)], cwd=home, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def serving(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-2000:]}")
        text = self.log.read_text(errors="replace")
        app_log = self.log_dir / "omen-app.log"
        if app_log.exists():
            text += app_log.read_text(errors="replace")
        return "serving the OpenAI API at" in text or "OMEN serving at" in text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after serving before measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="the measuring window")
    args = parser.parse_args()
    if missing_tools():
        print(f"app_idle: skipped, needs {', '.join(missing_tools())}")
        return 0
    with tempfile.TemporaryDirectory(prefix="app-idle-") as tmp, XDesktop() as desktop:
        fake = FakeUpstream("ollama")
        subjects: list[Subject] = []
        try:
            subjects = [
                Subject("omen serve", Path(tmp), desktop, fake.url, ["serve", "--port", "0"]),
                Subject("app tray only", Path(tmp), desktop, fake.url, ["app", "--minimized", "--no-glyph"]),
                Subject("app dashboard open", Path(tmp), desktop, fake.url, ["app", "--no-glyph"]),
            ]
            poll(lambda: all(s.serving() for s in subjects), 90, "all three to serve", every_s=0.2)
            deadline = time.monotonic() + args.settle
            poll(lambda: time.monotonic() >= deadline, args.settle + 1, "settling")  # a window, not a sync
            t0 = time.monotonic()
            c0 = {s.name: cpu_seconds(s.proc.pid) for s in subjects}
            end = t0 + args.seconds
            poll(lambda: time.monotonic() >= end, args.seconds + 1, "the measuring window", every_s=0.5)
            wall = time.monotonic() - t0
            rows = {s.name: (100 * (cpu_seconds(s.proc.pid) - c0[s.name]) / wall, rss_mib(s.proc.pid))
                    for s in subjects}
        finally:
            for s in subjects:
                s.stop()
            fake.stop()
    floor_cpu, floor_rss = rows["omen serve"]
    print(f"idle over {wall:.0f} s (after {args.settle:.0f} s settling), one core = 100%:")
    print(f"{'':22} {'CPU %':>7} {'RSS MiB':>8} {'CPU vs serve':>13} {'RSS vs serve':>13}")
    for name, (cpu, rss) in rows.items():
        ratio_cpu = f"{cpu / floor_cpu:.2f}x" if floor_cpu > 0 else ("1.00x" if cpu == 0 else "inf")
        print(f"{name:22} {cpu:7.2f} {rss:8.0f} {ratio_cpu:>13} {rss / floor_rss:12.2f}x")
    print("targets (issue 20): dashboard open <= 0.5% CPU, tray only <= 0.1% CPU and <= 110 MiB RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
