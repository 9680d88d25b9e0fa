"""What the real-client tests launch: fake upstreams and a real ``omen serve`` as processes, and
the pinned agent CLIs (tests/clients/package.json) run headless against them.

Everything here is what a user runs: ``python -m tests.fakes.serve KIND --control`` (a fake
provider speaking its public wire format, scripted over HTTP, tests/fakes/control.py),
``omen serve`` with a config file naming those fakes, and the CLI binary from
``node_modules/.bin`` with a clean HOME. A CLI's run records its version, so each result
names the client it came from (``results.jsonl``, rendered into docs/clients.md by
``tests/clients/render_table.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.fakes.fake_anthropic import DEFAULT_KEY as ANTHROPIC_KEY
from tests.fakes.fake_openai import FakeOpenAI
from tests.needs import missing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = HERE / "node_modules" / ".bin"
RESULTS = HERE / "results.jsonl"
OPENAI_KEY = FakeOpenAI.api_key

# Environment every CLI runs with: no telemetry, no update checks, no colour, no prompts.
QUIET_ENV = {
    # Claude Code (docs: settings → environment variables)
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # Qwen Code and Continue: the variables their pinned bundles read (grep node_modules);
    # Codex's update check and analytics are config-file settings (its test writes them).
    "QWEN_TELEMETRY_ENABLED": "false",
    "CONTINUE_CLI_ENABLE_TELEMETRY": "0",
    "CONTINUE_METRICS_ENABLED": "0",
    # every npm/node program
    "NO_UPDATE_NOTIFIER": "1",
    "NPM_CONFIG_UPDATE_NOTIFIER": "false",
    "NO_COLOR": "1",
    "FORCE_COLOR": "0",
    "TERM": "dumb",
}


def _wait(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll an observable condition until it holds (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=15) as resp:
        return json.loads(resp.read())


# ------------------------------------------------------------------ fake upstreams


@dataclass
class Fake:
    """A fake provider process: its API at ``url``, its script and records at ``control``."""

    kind: str
    url: str
    control: str
    proc: subprocess.Popen[str]

    def rules(self, *rules: dict[str, Any]) -> None:
        """Replace the fake's rules (tests/fakes/control.py says what a rule is)."""
        _http("POST", f"{self.control}/rules", {"rules": list(rules)})

    def seen(self) -> list[dict[str, Any]]:
        """Every request the fake received (path, headers without keys, body)."""
        rows: list[dict[str, Any]] = _http("GET", f"{self.control}/seen")
        return rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def start_fake(kind: str, *, models: list[str] | None = None, no_key: bool = False) -> Fake:
    argv = [sys.executable, "-m", "tests.fakes.serve", kind, "--port", "0", "--control"]
    if models is not None:
        argv += ["--models", ",".join(models)]
    if no_key:
        argv.append("--no-key")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    control = proc.stdout.readline().strip()
    if not url.startswith("http://") or not control.startswith("CONTROL "):
        proc.kill()
        raise AssertionError(f"fake {kind} did not start: {url!r} {control!r}")
    return Fake(kind, url, control.split(" ", 1)[1], proc)


# ------------------------------------------------------------------ omen serve


def provider_config(fakes: dict[str, Fake]) -> str:
    """``[providers.*]`` blocks for the fakes, keys read from the environment ``start_omen`` sets."""
    parts = []
    for name, fake in fakes.items():
        if fake.kind == "ollama":
            parts.append(f'[providers.{name}]\nkind = "ollama"\nbase_url = "{fake.url}"\n')
        elif fake.kind == "openai":
            parts.append(f'[providers.{name}]\nkind = "openai"\nbase_url = "{fake.url}/v1"\nkey = ["env:FAKE_OPENAI_KEY"]\n')
        else:
            parts.append(f'[providers.{name}]\nkind = "anthropic"\nbase_url = "{fake.url}"\nkey = ["env:FAKE_ANTHROPIC_KEY"]\n')
    return "\n".join(parts)


@dataclass
class Omen:
    """A running ``omen serve``: ``url`` (no /v1), the owner ``token``, its HOME and log dir."""

    url: str
    token: str
    home: Path
    config: Path
    log_dir: Path
    proc: subprocess.Popen[str]
    env: dict[str, str]
    banner: list[str] = field(default_factory=list)

    def omen(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run another ``omen`` command against the same config and data."""
        return subprocess.run([sys.executable, "-m", "omen_local", "--config", str(self.config), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def request_log(self) -> list[dict[str, str]]:
        """The request log's lines (docs/api.md, "Request log"), parsed."""
        path = self.log_dir / "requests.log"
        if not path.exists():
            return []
        from omen_local.requestlog import parse_line

        return [parse_line(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def wait_log(self, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
        """The request log once it holds at least ``count`` lines."""
        rows: list[dict[str, str]] = _wait(lambda: (r := self.request_log()) and len(r) >= count and r, f"{count} request log lines", timeout)
        return rows

    def stop(self) -> str:
        """Stop the server; return what it wrote to stderr (for failure messages)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


def start_omen(tmp: Path, fakes: dict[str, Fake], extra: str = "") -> Omen:
    """``omen serve --port 0`` with a config naming ``fakes`` (provider name → fake) plus ``extra`` TOML."""
    home = tmp / "omen-home"
    home.mkdir(parents=True, exist_ok=True)
    data_dir = home / "data"
    log_dir = home / "logs"
    config = home / "config.toml"
    config.write_text(
        f"""[storage]
data_dir = "{data_dir}"

[defaults]
failure_cooldown_s = 30
first_token_timeout_s = 10
health_interval_s = 3600

[discovery]
local = false

{provider_config(fakes)}
{extra}
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMEN_", "XDG_", "ANTHROPIC_", "OPENAI_"))}
    env.update(HOME=str(home), OMEN_SECRETS="file", OMEN_LOG_DIR=str(log_dir), PYTHONPATH=str(ROOT),
               FAKE_OPENAI_KEY=OPENAI_KEY, FAKE_ANTHROPIC_KEY=ANTHROPIC_KEY)  # fmt: skip
    argv = [sys.executable, "-m", "omen_local", "--config", str(config), "serve", "--port", "0"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+)/v1", first)
    if found is None:
        proc.kill()
        raise AssertionError(f"omen serve did not start: {first!r} {proc.communicate(timeout=10)[1][-2000:]}")
    banner = [first]
    for _ in fakes:  # one line per provider after the token line
        banner.append(proc.stdout.readline())
    token = subprocess.run([sys.executable, "-m", "omen_local", "--config", str(config), "token"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return Omen(found.group(1), token, home, config, log_dir, proc, env, banner)


# ------------------------------------------------------------------ the CLIs


@dataclass
class CliRun:
    client: str
    version: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return f"{self.client} {self.version}: exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


AIDER_VENV = HERE / ".venv-aider"  # aider-chat pins its own versions of many packages: a venv of its own
PYTHON_CLIS = {
    "llm": (Path(sys.executable).with_name("llm"), "install the test extra (pip install -e '.[test]')"),
    "aider": (AIDER_VENV / "bin" / "aider", f"python3 -m venv {AIDER_VENV} && {AIDER_VENV}/bin/pip install 'aider-chat==0.86.2' (.ci/run does)"),
}  # CLIs from PyPI, pinned


def cli_path(client: str) -> Path:
    """The pinned CLI. The npm ones install from the lockfile the first time a test needs it;
    a missing runtime (node, npm) or Python CLI (aider's own venv) skips here and fails in CI
    (tests/needs.py)."""
    if client in PYTHON_CLIS:
        path, install = PYTHON_CLIS[client]
        if not path.exists():
            missing(str(path), install)
        return path
    path = BIN / client
    if not path.exists():
        _install_clis()
    if not path.exists():
        raise AssertionError(f"{path} is missing after installing tests/clients' lockfile")
    return path


@cache
def _install_clis() -> None:
    """`npm ci` in tests/clients (`npm install` of the same locked tree where `npm ci` refuses the
    lockfile's other-OS entries the registry no longer serves; see .ci/run)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm (the agent CLIs' runtime)", "apt-get install nodejs npm, Node 20+")
    here = BIN.parent.parent
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    if subprocess.run(["npm", "ci", *quiet], cwd=here, capture_output=True).returncode != 0:
        subprocess.run(["npm", "install", *quiet], cwd=here, capture_output=True, check=True)


@cache
def cli_version(client: str) -> str:
    """``CLIENT --version``'s version number (e.g. ``2.1.332``)."""
    with tempfile.TemporaryDirectory(prefix="omen-cli-version-") as home:  # some CLIs write into HOME even for --version
        out = subprocess.run([str(cli_path(client)), "--version"], capture_output=True, text=True, timeout=60,
                             env=clean_env(Path(home)), cwd=home)  # fmt: skip
    found = re.search(r"\d+\.\d+(?:\.\d+)?", out.stdout + out.stderr)
    assert found, f"{client} --version said {out.stdout!r} {out.stderr!r}"
    return found.group(0)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A fresh user's environment: its own HOME, PATH with node, the quiet switches, ``extra``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        **QUIET_ENV,
    }
    env.update(extra)
    return env


def run_cli(client: str, args: list[str], *, home: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 180, stdin: str | None = None) -> CliRun:  # fmt: skip
    """Run a pinned CLI headless with a clean HOME; capture everything; never hang past ``timeout``."""
    argv = [str(cli_path(client)), *args]
    full_env = clean_env(home, **(env or {}))
    start = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=cwd or home, env=full_env, capture_output=True, text=True, timeout=timeout,
                              input=stdin if stdin is not None else "")  # fmt: skip
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code = -9
        out = (exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout) or ""
        err = ((exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr) or "") + f"\n[timed out after {timeout}s]"
    return CliRun(client, cli_version(client), argv, code, out, err, round(time.monotonic() - start, 2))


def record_result(client: str, door: str, feature: str, ok: bool, detail: str = "") -> None:
    """Append one observed result for docs/clients.md's table (render_table.py)."""
    row = {"client": client, "version": cli_version(client), "door": door, "feature": feature, "ok": ok, "detail": detail}
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------- what a chat-door CLI sent


def chat_tools(body: dict[str, Any]) -> list[str]:
    """The tool names a chat request offered."""
    return [t["function"]["name"] if "function" in t else t["name"] for t in body.get("tools") or []]


def texts(body: dict[str, Any]) -> str:
    """A chat request's messages as one string, to look for what a turn carried."""
    return json.dumps(body.get("messages") or [])


def agent_turns(fake: Fake) -> list[dict[str, Any]]:
    """The requests that offered tools (the agent's turns; not side requests such as titles)."""
    return [s["body"] for s in fake.seen() if s["body"].get("tools")]
