"""Helpers for Glyph's security tests: `glyph serve` as the user runs it, spoken to in raw JSON-RPC."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp: Path, body: str = "") -> Path:
    """A glyph.toml sharing ``tmp/root`` (Rune as a subprocess, as shipped), data in ``tmp/data``."""
    root = tmp / "root"
    root.mkdir(exist_ok=True)
    path = tmp / "glyph.toml"
    path.write_text(f'roots = ["{root}"]\ndata_dir = "{tmp / "data"}"\n{body}')
    return path


def glyph_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "xdg-data"),
                "XDG_RUNTIME_DIR": str(tmp / "run"), "OMEN_CONSENT_CHANNEL": str(tmp / "run" / "none.json")})
    (tmp / "run").mkdir(exist_ok=True, mode=0o700)
    return env


class RawClient:
    """An MCP client over a child's stdin/stdout, one JSON-RPC line at a time."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, **({"params": params} if params else {})})
        return self.next_id

    def answer(self, request_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"glyph closed stdout; stderr: {self.stderr()}")
            message: dict[str, Any] = json.loads(line)
            if message.get("id") == request_id:
                return message
        raise AssertionError(f"no answer to request {request_id} within {timeout_s} s")

    def initialize(self, client_name: str = "test-editor") -> None:
        rid = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": client_name, "version": "1"}})
        assert "result" in self.answer(rid)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, tool: str, arguments: dict[str, Any]) -> int:
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def stderr(self) -> str:
        if self.proc.stderr is None or self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")


def spawn_glyph(config: Path, env: dict[str, str], *extra: str, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "glyph", "serve", "--config", str(config), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=str(REPO), **popen)


def result_text(message: dict[str, Any]) -> str:
    return " ".join(c.get("text", "") for c in message["result"]["content"])
