"""The attacker: another OS user on the same machine, and the real ``omen serve`` it attacks.

CI runs as root, so the attacker is an unprivileged account made here (``useradd``) and
its processes run under ``runuser``. Without root, the tests that need one are skipped
unless the account already exists and we can switch to it (we cannot: runuser needs root).
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ATTACKER = "omen-sec-attacker"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SQUATTER_SRC = (HERE / "attacker_server.py").read_text()
DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def attacker() -> Iterator[str]:
    """The name of an unprivileged account, made for the session (root only)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to create a second OS user and run processes as it (CI runs as root)")
    if shutil.which("runuser") is None or shutil.which("setpriv") is None:
        pytest.skip("runuser and setpriv (util-linux) are not installed")
    made = subprocess.run(["id", ATTACKER], capture_output=True).returncode != 0
    if made:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER],
                       check=True, capture_output=True)
    yield ATTACKER
    if made:
        subprocess.run(["userdel", ATTACKER], capture_output=True)


@dataclass
class Squatter:
    """An HTTP server run by the attacker's account on a loopback port; ``seen`` is what it received."""

    proc: subprocess.Popen[str]
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)

    def tokens_seen(self) -> list[str]:
        out = []
        for req in self.seen:
            for k, v in req["headers"].items():
                if k.lower() in ("authorization", "x-api-key"):
                    out.append(v)
        return out

    def bodies(self) -> str:
        return "\n".join(r["body"] for r in self.seen)


def start_squatter(user: str, port: int, host: str = "127.0.0.1") -> Squatter:
    pw = pwd.getpwnam(user)  # setpriv execs (runuser would fork, and a kill would leave the server running)
    proc = subprocess.Popen(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                             "/usr/bin/python3", "-c", SQUATTER_SRC, host, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    assert proc.stdout is not None
    ready: queue.Queue[str] = queue.Queue()
    sq = Squatter(proc, port)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                ready.put(line)
            elif line.strip():
                sq.seen.append(json.loads(line))
        ready.put("EOF")

    threading.Thread(target=pump, daemon=True).start()
    line = ready.get(timeout=DEADLINE_S)
    if not line.startswith("READY"):
        raise RuntimeError(f"the squatter did not start: {proc.stderr.read() if proc.stderr else ''}")
    return sq


Squat = Callable[..., Squatter]


@pytest.fixture
def squat(attacker: str) -> Iterator[Squat]:
    made: list[Squatter] = []

    def make(port: int, host: str = "127.0.0.1") -> Squatter:
        sq = start_squatter(attacker, port, host)
        made.append(sq)
        return sq

    yield make
    for sq in made:
        sq.proc.kill()
        sq.proc.wait()


def omen_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMEN_", "XDG_"))}
    env.update(HOME=str(home), OMEN_SECRETS="file", PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(home / "data"),
               XDG_CONFIG_HOME=str(home / "config"), XDG_STATE_HOME=str(home / "state"),
               XDG_CACHE_HOME=str(home / "cache"), **extra)
    return env


def omen_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omen_local", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class OmenProcess:
    proc: subprocess.Popen[str]
    url: str
    lines: list[str]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.kill()


def start_omen(config: Path, env: dict[str, str]) -> OmenProcess:
    """``omen serve`` as the user runs it; returns once it says where it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "omen_local", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"serving the OpenAI API at (https?://\S+)/v1", line)
            if m:
                found.put(m.group(1))
        found.put("")

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = found.get(timeout=DEADLINE_S)
    except queue.Empty:
        proc.kill()
        raise
    if not url:
        raise RuntimeError("omen serve did not start:\n" + "".join(lines))
    return OmenProcess(proc, url, lines)


def wait_for(cond: Any, what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll an observable condition until it holds or the deadline passes."""
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
