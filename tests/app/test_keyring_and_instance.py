"""Real processes: Settings writing a key to gnome-keyring (under dbus-run-session), one
instance per user, and `omen app` starting the app while `omen serve` never loads Qt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from app import keys
from app.single_instance import SingleInstance
from tests.app.conftest import Running

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "keyring_settings_script.py"
DELETE_SCRIPT = Path(__file__).resolve().parent / "keyring_delete_script.py"
HAVE_KEYRING_DAEMON = bool(shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon"))


@pytest.mark.skipif(not HAVE_KEYRING_DAEMON, reason="needs dbus-run-session and gnome-keyring (.ci/run installs them)")
def test_settings_store_a_key_in_gnome_keyring_and_test_it(tmp_path: Path) -> None:
    r = _in_gnome_keyring(tmp_path, SCRIPT)
    assert r["backend_ok"] is True and "Secret" in r["backend"], r
    assert r["ready"] is True
    assert r["before"].startswith("no API key")  # anthropic needs one
    assert r["stored_before"] == "not set" and "OS keyring" in r["backend_label"]
    assert r["in_keyring"] is True and r["in_config_file"] is False
    assert r["stored_after"] == "••••••••-123"  # masked
    assert r["after"] is True  # applied without a restart
    assert r["test_good"].startswith("OK: the key works"), r
    assert "key was refused (HTTP 401" in r["test_bad"], r


@pytest.mark.skipif(not HAVE_KEYRING_DAEMON, reason="needs dbus-run-session and gnome-keyring (.ci/run installs them)")
def test_delete_removes_every_copy_the_keyring_reads_back(tmp_path: Path) -> None:
    """Review of issue 20, item 6: a key in keyrings.alt's file behind the Secret Service was read
    back after "Deleted" (the chainer deletes from one backend; "no such entry" was swallowed)."""
    r = _in_gnome_keyring(tmp_path, DELETE_SCRIPT)
    assert r["backend_ok"] is True and r["chain"][0] == "Keyring" and "PlaintextKeyring" in r["chain"], r
    assert r["read_before"] == "sk-new-secret-service"
    assert (r["said_both"], r["read_after_both"]) == ("deleted", None), r
    assert (r["said_plain_only"], r["read_after_plain_only"]) == ("deleted", None), r
    assert r["said_none"] == "deleted"


def test_a_copy_that_survives_the_delete_is_reported(tmp_path: Path) -> None:
    """A backend that refuses to delete (a locked keychain): the copy is read back, and said."""
    import keyring
    from keyring.errors import PasswordDeleteError
    from keyrings.alt.file import PlaintextKeyring

    ring = PlaintextKeyring()  # an instance, not a subclass: nothing joins keyring's registry
    ring.file_path = str(tmp_path / "keyring_pass.cfg")  # type: ignore[misc]
    ring.set_password("omen-local", "openai", "sk-still-here")

    def refuse(service: str, username: str) -> None:
        raise PasswordDeleteError("the collection is locked")

    ring.delete_password = refuse  # type: ignore[method-assign]
    before = keyring.get_keyring()
    keyring.set_keyring(ring)
    try:
        with pytest.raises(RuntimeError, match=r"still in file PlaintextKeyring .*keyring del omen-local openai") as err:
            keys.delete("openai")
        assert "sk-still-here" not in str(err.value) and "the collection is locked" in str(err.value)
        assert str(tmp_path / "keyring_pass.cfg") in str(err.value)  # where to find it
    finally:
        keyring.set_keyring(before)


def _in_gnome_keyring(tmp_path: Path, script: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "OMEN_SECRETS", "PYTHON_KEYRING"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"), XDG_CONFIG_HOME=str(home / ".config"),
               PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    shell = ('echo -n "keyring-test-password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null '
             f'&& exec "{sys.executable}" "{script}" "{tmp_path}"')
    out = subprocess.run(["dbus-run-session", "--", "sh", "-c", shell], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1][7:])
    return result


def test_without_a_keyring_backend_settings_say_what_to_do(running: Running) -> None:
    if keys.backend().ok:
        pytest.skip(f"this machine has a keyring backend: {keys.backend()}")
    running.app.open_settings()
    dialog = running.app.settings
    assert dialog is not None
    running.wait(lambda: dialog.backend_label.text() != "")
    assert dialog.backend_label.text() == keys.NO_BACKEND
    assert "docs/app.md" in keys.NO_BACKEND and "OPENAI_API_KEY" in keys.NO_BACKEND
    assert not dialog.key_rows["openai"]["save"].isEnabled()


def test_a_second_launch_brings_the_first_to_front_and_exits(running: Running, qtbot: QtBot) -> None:
    instance = SingleInstance()
    assert instance.listen()
    instance.activated.connect(running.app.open_dashboard)
    try:
        assert not running.app.dashboard.isVisible()
        second = subprocess.Popen(
            [sys.executable, "-m", "app", "--config", str(running.config), "--no-glyph"], cwd=ROOT,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        qtbot.waitUntil(lambda: second.poll() is not None, timeout=60_000)
        stdout, stderr = second.communicate()
        assert second.returncode == 0, stderr[-2000:]
        assert "already running" in stdout
        assert running.app.dashboard.isVisible()  # the first one came to the front
    finally:
        instance.close()


def test_a_stale_instance_socket_is_taken_over(private_env: Path) -> None:
    first = SingleInstance()
    assert first.listen()
    first.server.close()  # as if it had crashed, leaving nothing listening
    second = SingleInstance()
    assert second.listen()
    second.close()


def test_omen_app_command_and_serve_stays_qt_free(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "omen_local", "app", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--minimized" in out.stdout
    code = ("import sys, omen_local.cli as c; p = c.build_parser(); p.parse_args(['serve']);"
            "print([m for m in sys.modules if m.split('.')[0] in ('PySide6', 'app', 'qasync')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_app_process_serves_and_sigterm_quits_cleanly(tmp_path: Path) -> None:
    """`python -m app` as users run it: serves, then SIGTERM (logout, kill) flushes usage and exits."""
    import signal
    import socket
    import sqlite3
    import time
    import urllib.request

    import openai

    from tests.app.conftest import Upstreams, make_config, wait_port_closed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Upstreams() as up:
        config = make_config(tmp_path, up)
        config.write_text(config.read_text().replace("port = 0", f"port = {port}", 1))
        app = subprocess.Popen([sys.executable, "-m", "app", "--config", str(config), "--no-glyph", "--minimized",
                                "--assume-tray"], cwd=ROOT, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and app.poll() is None:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.05)
            token = json.loads((tmp_path / "data" / "secrets.json").read_text())["server-token"]
            with openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0) as client:
                for _ in range(3):
                    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            app.send_signal(signal.SIGTERM)
            app.wait(30)
        finally:
            if app.poll() is None:
                app.kill()
        _out, err = app.communicate()
        assert app.returncode == 0, err[-2000:]
        assert wait_port_closed(url)
        with sqlite3.connect(tmp_path / "data" / "usage.db") as db:
            assert db.execute("SELECT COUNT(*) FROM usage_event").fetchone() == (3,)
