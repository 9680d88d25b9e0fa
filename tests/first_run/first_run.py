"""A new user's first run, scripted: run inside ``dbus-run-session`` with gnome-keyring unlocked.

    python tests/first_run/first_run.py WORKDIR

1. install into a fresh venv, the README's way (``python -m venv`` + ``pip install .``);
2. a clean HOME: no config, no data, no keys; ``omen serve`` with nothing reachable:
   the banner and ``omen doctor`` say so, the first ``auto`` request names Ollama's address;
3. a fake Ollama on 11434 and a fake LM Studio (OpenAI-compatible) on 1234 start: ``auto``
   uses them without any config edit;
4. ``omen provider add box URL`` for a server on another port: used at once;
5. ``omen key set anthropic``: stored in the OS keyring, and the running OMEN sees it.

Prints ``RESULT {json}`` with what each step observed; the pytest wrapper checks it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def http(url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


# Bounds a failure only (a pass returns as soon as ``check`` holds). OMEN looks for local
# servers every 2 s while none answers, then every health_interval_s (15 s): LM Studio, up a
# moment after Ollama, may be found only by the next 15 s scan, later still on a loaded machine.
WAIT_S = 60.0


def wait_for(check: Any, timeout: float = WAIT_S) -> Any:
    """``check()``'s first truthy value, polled; its last (falsy) value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def main(work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    venv = work / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True, text=True)
    result["install_ok"] = pip.returncode == 0
    result["install_s"] = round(time.monotonic() - t0, 1)
    if pip.returncode != 0:
        result["install_error"] = pip.stderr[-2000:]
        return result
    omen = str(venv / "bin" / "omen")
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMEN_", "XDG_", "PYTHON_KEYRING", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    fakes_env = {**env, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[str]] = []

    def fake(kind: str, port: int, *extra: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.serve", kind, "--port", str(port), *extra],
            cwd=ROOT, env=fakes_env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    try:
        server = subprocess.Popen([omen, "serve", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(server)
        assert server.stdout is not None
        banner = [server.stdout.readline() for _ in range(6)]
        result["banner"] = banner
        base = re.search(r"(http://127\.0\.0\.1:\d+)/v1", banner[0]).group(1)  # type: ignore[union-attr]
        token = subprocess.run([omen, "token"], env=env, capture_output=True, text=True).stdout.strip()
        result["keyring_backend"] = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import keyring; print(type(keyring.get_keyring()).__name__)"],
            env=env, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

        doctor = subprocess.run([omen, "doctor", "--timeout", "1"], env=env, capture_output=True, text=True)
        result["doctor_exit"] = doctor.returncode
        result["doctor"] = doctor.stdout

        ask = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
        result["first_request"] = http(f"{base}/v1/chat/completions", token, ask)

        # Local servers started after OMEN, on their usual ports: no config edit.
        result["ollama_url"] = fake("ollama", 11434)
        result["lmstudio_url"] = fake("openai", 1234, "--no-key")

        def served_by(body: dict[str, Any]) -> Any:
            status, reply = http(f"{base}/v1/chat/completions", token, body)
            return (status, reply.get("model")) if status == 200 else None

        result["auto_after_local"] = wait_for(lambda: served_by(ask))
        found = {**ask, "omen": {"providers": ["lmstudio"]}}
        result["lmstudio_answer"] = wait_for(lambda: served_by(found))
        status = http(f"{base}/v1/omen/status", token)[1]
        result["lmstudio_status"] = status["providers"].get("lmstudio", {})

        # A server on another port, added by name: used at once.
        box_url = fake("openai", 0, "--no-key", "--models", "box-model")
        add = subprocess.run([omen, "provider", "add", "box", f"{box_url}/v1"], env=env, capture_output=True, text=True)
        result["provider_add"] = add.stdout + add.stderr
        result["box_answer"] = served_by({**ask, "omen": {"providers": ["box"]}})
        result["config_file"] = (home / ".config" / "omen-local" / "config.toml").read_text()

        # A key through the OS keyring; the running OMEN sees it without a restart.
        before = http(f"{base}/v1/omen/status", token)[1]["providers"]["anthropic"]
        setkey = subprocess.run([omen, "key", "set", "anthropic"], env=env, input="sk-ant-first-run-key\n", capture_output=True, text=True)
        result["key_set"] = setkey.stdout + setkey.stderr
        result["key_in_keyring"] = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import keyring; print(keyring.get_password('omen-local', 'anthropic'))"],
            env=env, capture_output=True, text=True,
        ).stdout.strip() == "sk-ant-first-run-key"  # fmt: skip
        after = http(f"{base}/v1/omen/status", token)[1]["providers"]["anthropic"]
        result["anthropic_usable"] = [before["usable"], after["usable"]]
        result["secrets_file"] = any(p.name == "secrets.json" for p in home.rglob("secrets.json"))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    return result


if __name__ == "__main__":
    out = main(Path(sys.argv[1]))
    print("RESULT " + json.dumps(out), flush=True)
