"""The `omen` command as a user runs it: serve headless, tokens, keys, and a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[storage]
data_dir = "{tmp_path / 'data'}"
[providers.ollama]
base_url = "http://127.0.0.1:9"
""",
        encoding="utf-8",
    )
    e = {k: v for k, v in os.environ.items() if k not in ("OMEN_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    e.update(OMEN_CONFIG=str(cfg), OMEN_SECRETS="file")
    return e


def omen(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omen_local", *args], env=env, input=stdin, capture_output=True, text=True, timeout=30
    )


def test_serve_token_and_clean_shutdown(env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "omen_local", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", first)
        assert match, first
        banner = [proc.stdout.readline() for _ in range(5)]
        # What was probed, and what it said: Ollama is not running, the cloud has no keys.
        assert any("provider ollama: down (unreachable at http://127.0.0.1:9" in line for line in banner), banner
        assert any("provider openai: unusable (no API key" in line for line in banner), banner
        assert not any("ready" in line for line in banner)
        assert "nothing can answer yet" in banner[-1]
        base = f"http://127.0.0.1:{match.group(1)}"
        assert get(f"{base}/health") == (200, {"status": "ok"})

        token = omen(env, "token").stdout.strip()
        assert token.startswith("omen-")
        assert omen(env, "token").stdout.strip() == token  # stable across runs
        code, models = get(f"{base}/v1/models", token)
        assert code == 200 and models["data"][0]["id"] == "auto"
        assert get(f"{base}/v1/models", "wrong")[0] == 401

        bob = omen(env, "token", "create", "--user", "bob", "--label", "cli-test").stdout.strip()
        code, status = get(f"{base}/v1/omen/status", bob)
        assert code == 200  # the running server sees the new token
        listed = omen(env, "token", "list").stdout
        assert "user=bob" in listed and bob not in listed

        assert status["providers"]["openai"]["usable"] is False
        assert "no API key" in status["providers"]["openai"]["reason"]
        assert status["providers"]["ollama"]["state"] == "down"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_key_set_from_stdin_makes_provider_usable(env: dict[str, str]) -> None:
    out = omen(env, "key", "set", "openai", stdin="sk-test-abc\n")
    assert out.returncode == 0 and "sk-test-abc" not in out.stdout + out.stderr
    assert omen(env, "key", "check", "openai").stdout.strip() == "set"
    secrets = Path(env["OMEN_CONFIG"]).parent / "data" / "secrets.json"
    assert oct(secrets.stat().st_mode & 0o777) == "0o600"


def test_config_errors_are_reported_not_raised(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'eighty'\n", encoding="utf-8")
    out = omen(env, "serve", "--config", str(bad))
    assert out.returncode == 2 and "server.port" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_message(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = omen(env, "serve", "--port", str(port))
    assert out.returncode == 1 and "cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_provider_add_keeps_comments_and_a_running_server_uses_it(env: dict[str, str], tmp_path: Path) -> None:
    cfg = Path(env["OMEN_CONFIG"])
    cfg.write_text("# my own notes\n" + cfg.read_text(encoding="utf-8") + "\n[defaults]\nk = 2   # two is plenty\n", encoding="utf-8")
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.serve", "openai", "--no-key", "--models", "box-model"],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "omen_local", "serve", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and proc.stdout is not None
        box = fake.stdout.readline().strip()
        base = re.search(r"(http://127\.0\.0\.1:\d+)/v1", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        token = omen(env, "token").stdout.strip()
        out = omen(env, "provider", "add", "box", f"{box}/v1")
        assert out.returncode == 0, out.stderr
        assert "'auto' uses it for: chat, code" in out.stdout and "uses it now" in out.stdout
        text = cfg.read_text(encoding="utf-8")
        assert text.startswith("# my own notes") and "k = 2   # two is plenty" in text and "[providers.box]" in text
        req = urllib.request.Request(
            f"{base}/v1/chat/completions",
            data=json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "omen": {"providers": ["box"]}}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["x-omen-provider"] == "box" and json.loads(resp.read())["model"] == "box-model"
        listed = omen(env, "provider", "list").stdout
        assert "box: openai" in listed and "chat" in listed
        # Only the owner may ask for a reload.
        bob = omen(env, "token", "create", "--user", "bob").stdout.strip()
        req = urllib.request.Request(f"{base}/v1/omen/reload", data=b"{}", headers={"Authorization": f"Bearer {bob}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 403
    finally:
        for p in (proc, fake):
            p.terminate()
            p.wait(timeout=10)


def test_serve_settles_the_collector_once_it_serves(env: dict[str, str]) -> None:
    """`omen serve` freezes start-up's objects out of the collector's walks (gc_tuning.py),
    once it serves and before it says so."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "omen_local", "--log-level", "info", "serve", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        before_banner: list[str] = []
        for line in proc.stdout:  # the log and the banner in the order written
            if "serving the OpenAI API" in line:
                break
            before_banner.append(line)
        else:
            raise AssertionError(f"omen serve ended before serving: {before_banner}")
        settled = [line for line in before_banner if re.search(r"collector settled: \d+ start-up objects frozen in \d+ ms", line)]
        assert len(settled) == 1, before_banner
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert "collector settled" not in rest  # once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
