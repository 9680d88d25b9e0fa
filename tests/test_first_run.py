"""From download to first answer, as a new user on a clean machine (issue 13's first run).

Runs tests/first_run/first_run.py inside ``dbus-run-session`` with an unlocked
gnome-keyring (a real OS keyring backend), in a fresh venv and a clean HOME, with fake
upstreams on the usual local ports (11434 for Ollama, 1234 for LM Studio).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "first_run" / "first_run.py"
CI = bool(os.environ.get("CI"))


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind (TIME_WAIT is no obstacle)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_first_run_from_a_fresh_venv(tmp_path: Path) -> None:
    missing = [tool for tool in ("dbus-run-session", "gnome-keyring-daemon") if not shutil.which(tool)]
    busy = [port for port in (11434, 1234) if not _free(port)]
    if missing or busy:
        reason = f"needs {', '.join(missing)} (apt: dbus gnome-keyring)" if missing else f"ports {busy} are taken here"
        if CI:
            pytest.fail(reason)
        pytest.skip(reason)
    shell = (
        'echo -n "first-run-password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null '
        f'&& exec "{sys.executable}" "{SCRIPT}" "{tmp_path}"'
    )
    home = tmp_path / "home"
    (home / ".local" / "share").mkdir(parents=True)  # the keyring daemon keeps login.keyring there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "OMEN_", "XDG_"))}
    env.update(HOME=str(home))
    out = subprocess.run(["dbus-run-session", "--", "sh", "-c", shell], env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads(lines[-1][7:])
    assert r["install_ok"], r.get("install_error")

    # Nothing reachable: the banner, the doctor and the first request all say why.
    banner = "".join(r["banner"])
    assert "provider ollama: down (unreachable at http://127.0.0.1:11434" in banner, banner
    assert "nothing can answer yet" in banner
    assert r["doctor_exit"] != 0 and "11434" in r["doctor"] and "ollama" in r["doctor"].lower()
    status, body = r["first_request"]
    assert status == 503 and "ollama/*: unreachable at http://127.0.0.1:11434" in body["error"]["message"]
    assert "no API key" in body["error"]["message"]

    # Local servers on their usual ports are used without editing anything.
    assert r["auto_after_local"] and r["auto_after_local"][0] == 200
    assert r["lmstudio_answer"] and r["lmstudio_answer"][0] == 200
    assert r["lmstudio_status"]["found"] is True and r["lmstudio_status"]["local"] is True

    # `omen provider add` on another port: written to the config, used at once.
    assert "uses it now" in r["provider_add"], r["provider_add"]
    assert r["box_answer"] == [200, "box-model"]
    assert "[providers.box]" in r["config_file"] and '"box/*"' in r["config_file"]

    # A key through the OS keyring, picked up by the running OMEN.
    assert "Secret" in r["keyring_backend"] or "keyring" in r["keyring_backend"].lower(), r["keyring_backend"]
    assert "OS keyring" in r["key_set"] and r["key_in_keyring"] is True
    assert r["anthropic_usable"] == [False, True]
    assert r["secrets_file"] is False  # the key is in the keyring, not in a file
