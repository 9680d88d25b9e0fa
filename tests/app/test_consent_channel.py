"""The consent channel: an editor's own `glyph serve` (stdio) asks through the tray app's dialog."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.bridge import LoopThread
from app.consent_dialog import QtPrompter
from app.consent_server import ConsentServer
from glyph.app_prompter import AppPrompter, channel_file, read_channel
from glyph.audit import AuditLog
from glyph.consent import ConsentRequest, Decision, Scope, ask_fail_closed
from glyph.db import Store
from tests.glyph.conftest import ScriptedPrompter

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "glyph" / "fake_server.py"
EDITOR = types.Implementation(name="vscode-like-editor", version="1.2")


@pytest.fixture
def channel(qtbot: QtBot) -> Iterator[tuple[ConsentServer, QtPrompter]]:
    prompter = QtPrompter(timeout_s=None)
    server = ConsentServer(prompter, timeout_s=60)
    server.start()
    try:
        yield server, prompter
    finally:
        server.stop()


@pytest.fixture
def worker() -> Iterator[LoopThread]:
    thread = LoopThread("editor")
    thread.start()
    yield thread
    thread.stop()


def request(**over: Any) -> ConsentRequest:
    base: dict[str, Any] = {"client": "ed/1", "server": "fake", "tool": "write_file", "exposed": "fake__write_file",
                            "arguments": {"path": "a.txt", "content": "hi\n"}, "reason": "no rule allows it"}
    base.update(over)
    return ConsentRequest(**base)


def test_channel_is_user_only_and_announced(channel: tuple[ConsentServer, QtPrompter], private_env: Path) -> None:
    server, _ = channel
    path = channel_file()
    assert path == private_env / "omen-local" / "consent.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    address, secret = read_channel(path) or ("", "")
    assert address.startswith("unix:") and secret == server.secret and len(secret) == 64
    assert stat.S_IMODE(Path(address[5:]).stat().st_mode) == 0o600
    server.stop()
    assert not path.exists()  # the app is gone: Glyph falls back


def test_external_glyph_serve_is_answered_by_the_app_dialog(
        channel: tuple[ConsentServer, QtPrompter], worker: LoopThread, qtbot: QtBot, tmp_path: Path,
        private_env: Path) -> None:
    _, prompter = channel
    (tmp_path / "root").mkdir()
    cfg = tmp_path / "glyph.json"
    cfg.write_text(json.dumps({
        "roots": [str(tmp_path / "root")], "data_dir": str(tmp_path / "gdata"), "rune": {"enabled": False},
        "mcpServers": {"fake": {"command": sys.executable, "args": [str(FAKE)]}},
    }))
    # An editor starts Glyph on its own, over stdio, with the default prompt mode.
    params = StdioServerParameters(command=sys.executable, cwd=str(ROOT), args=["-m", "glyph", "serve", "--config", str(cfg)],
                                   env={"XDG_RUNTIME_DIR": str(private_env), "PYTHONPATH": str(ROOT)})
    results: list[types.CallToolResult] = []

    async def editor() -> None:
        async with Client(params, client_info=EDITOR, cache=None) as client:
            for _ in range(2):
                results.append(await client.call_tool("fake__write_file", {"path": "notes.txt", "content": "x"}))

    session = worker.submit(editor())
    qtbot.waitUntil(lambda: prompter.current is not None, timeout=30_000)
    dialog = prompter.current
    assert dialog is not None and dialog.isVisible()
    assert dialog.request.client == "vscode-like-editor/1.2" and dialog.request.tool == "write_file"
    qtbot.mouseClick(dialog.button(Scope.ONCE), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(results) == 1, timeout=10_000)
    assert not results[0].is_error

    qtbot.waitUntil(lambda: prompter.current is not None and prompter.current is not dialog, timeout=10_000)
    second = prompter.current
    assert second is not None
    qtbot.mouseClick(second.button(Scope.DENY), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(session.done, timeout=15_000)
    session.result()
    assert results[1].is_error
    with Store(tmp_path / "gdata" / "glyph.db") as store:
        calls = [r for r in AuditLog(store).rows() if r["kind"] == "call"]
    assert [(r["decision"], r["decided_by"]) for r in calls] == [("allow", "app:user:qt:once"), ("deny", "app:user:qt:deny")]


def test_no_app_means_the_configured_fallback(worker: LoopThread, tmp_path: Path) -> None:
    fallback = ScriptedPrompter(Scope.SESSION)
    prompter = AppPrompter(fallback)
    assert worker.submit(prompter.ask(request())).result(10) == Decision(Scope.SESSION, "user:script")
    # a stale channel file (the app died) is the same as none
    stale = channel_file()
    stale.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(stale, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"version": 1, "address": f"unix:{tmp_path / 'gone.sock'}", "secret": "x" * 64}).encode())
    os.close(fd)
    assert worker.submit(prompter.ask(request())).result(10) == Decision(Scope.DENY, "user:script")  # script ran out
    # without a fallback: deny
    assert worker.submit(AppPrompter().ask(request())).result(10).scope is Scope.DENY


def test_a_wrong_secret_is_refused_and_no_dialog_opens(channel: tuple[ConsentServer, QtPrompter],
                                                       worker: LoopThread, qtbot: QtBot) -> None:
    _server, prompter = channel
    path = channel_file()
    data = json.loads(path.read_text())
    data["secret"] = "0" * 64
    forged = path.with_name("forged.json")
    fd = os.open(forged, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(data).encode())
    os.close(fd)
    decision = worker.submit(AppPrompter(ScriptedPrompter(Scope.ALWAYS), channel=forged).ask(request())).result(10)
    assert decision == Decision(Scope.DENY, "fail-closed:app-refused")  # never the permissive fallback
    qtbot.wait(200)
    assert prompter.dialogs == {}
    # a channel file others can read is not trusted at all
    os.chmod(forged, 0o644)
    assert read_channel(forged) is None


def test_glyph_giving_up_closes_the_dialog(channel: tuple[ConsentServer, QtPrompter], worker: LoopThread,
                                           qtbot: QtBot) -> None:
    _, prompter = channel
    fut = worker.submit(ask_fail_closed(AppPrompter(), request(), timeout_s=1.0))
    qtbot.waitUntil(lambda: prompter.current is not None, timeout=10_000)
    qtbot.waitUntil(fut.done, timeout=10_000)
    assert fut.result() == Decision(Scope.DENY, "fail-closed:timeout")
    qtbot.waitUntil(lambda: prompter.dialogs == {}, timeout=10_000)  # the app closed its dialog too


def test_dialog_fallback_runs_the_app_dialog_as_a_process_and_fails_closed(worker: LoopThread,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from glyph.app_prompter import DialogPrompter

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # nobody clicks: the dialog's own countdown denies, and the answer comes back over stdout
    timed_out = worker.submit(DialogPrompter(timeout_s=0.5).ask(request())).result(60)
    assert timed_out == Decision(Scope.DENY, "dialog:fail-closed:timeout")
    broken = worker.submit(DialogPrompter(python=str(ROOT / "no-such-python")).ask(request())).result(10)
    assert broken == Decision(Scope.DENY, "fail-closed:no-dialog")
