"""The tray app end to end (pytest-qt, offscreen): menu, toggles, dashboard, UI stall, quit."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox, QPushButton
from pytestqt.qtbot import QtBot

from app.state import HEALTHY
from omen_local.config import load_config
from tests.app.conftest import Running, Upstreams, make_config, start_app, wait_port_closed
from tests.fakes.base import Reply
from tests.waiting import DEADLINE_S


def test_menu_shows_live_state_and_every_entry(running: Running) -> None:
    tray = running.app.tray
    assert tray is not None
    tray.menu.aboutToShow.emit()  # as when the user opens it
    texts = tray.texts()
    assert texts[0] == "OMEN: Running"  # a status in words, not a greyed item
    assert texts[1] == f"Copy endpoint and token ({running.url}/v1)"
    head = tray.menu.actions()[0]
    assert head.isEnabled() and head.font().bold()
    from PySide6.QtGui import QFontMetrics

    metrics = QFontMetrics(tray.menu.font())
    assert max(metrics.horizontalAdvance(a.text()) for a in tray.menu.actions()) <= 420
    assert "Providers" in texts
    assert "ollama — 2 models" in texts  # discovered from the fake's /api/tags
    assert "anthropic — 3 models" in texts and "openai — 5 models" in texts
    for entry in ("Default strategy >", "Open dashboard", "Settings…", "View logs", "Start at login",
                  "Keep running in the tray when the window closes", "Quit OMEN"):
        assert entry in texts, entry
    assert texts[-1] == "Quit OMEN"
    actions = {a.objectName(): a for a in tray.menu.actions()}
    assert all(actions[f"provider:{p}"].isChecked() for p in ("ollama", "openai", "anthropic"))
    assert not actions["autostart"].isChecked()  # opt-in, off by default
    assert actions["keep-running"].isChecked()
    assert tray.strategy_menu is not None and actions["strategy-menu"].menu() is tray.strategy_menu
    strategies = {a.objectName(): a.isChecked() for a in tray.strategy_menu.actions()}
    assert strategies == {"strategy:single": True, "strategy:race": False, "strategy:speculate_k": False,
                          "strategy:parallel_merge": False}
    assert tray.state == HEALTHY
    assert running.url in tray.icon.toolTip()
    from app.tray import RICH_TOOLTIPS  # X11 here: the tooltip is escaped HTML, read as rich text

    assert tray.icon.toolTip().startswith("<p style='white-space:pre-wrap'>OMEN Local: ") == RICH_TOOLTIPS

    actions["copy"].trigger()
    clip = QGuiApplication.clipboard().text()
    host = running.app.host  # the endpoint file's client token, never the owner's (docs/security.md)
    assert f"OPENAI_BASE_URL={running.url}/v1" in clip and host.client_token and host.client_token in clip
    assert host.owner_token not in clip


def test_provider_toggle_moves_the_next_request_and_persists(running: Running, qtbot: QtBot) -> None:
    assert running.ask() == "ollama"
    tray = running.app.tray
    assert tray is not None
    tray.menu.aboutToShow.emit()
    toggle = next(a for a in tray.menu.actions() if a.objectName() == "provider:ollama")
    toggle.trigger()  # unchecks: disable ollama
    running.wait(lambda: running.app.host.status is not None
                 and not running.app.host.status["providers"]["ollama"]["enabled"])
    assert running.ask() == "anthropic"
    assert running.ask(stream=True) == "anthropic"
    assert load_config(running.config).providers["ollama"].enabled is False  # survives a restart
    tray.menu.aboutToShow.emit()  # rebuilt fresh: shows the new state
    assert "ollama — off" in tray.texts()

    assert tray.strategy_menu is not None
    strategy = next(a for a in tray.strategy_menu.actions() if a.objectName() == "strategy:race")
    strategy.trigger()
    running.wait(lambda: running.app.host.status is not None
                 and running.app.host.status["default_strategy"] == "race")
    assert load_config(running.config).defaults.strategy == "race"


def test_dashboard_updates_from_new_usage_events(running: Running) -> None:
    dash = running.app.dashboard
    dash.redraw(force=True)
    assert dash.table_model.rowCount() == 0
    for _ in range(3):
        running.ask()
    running.ask(stream=True)
    running.wait(lambda: running.app.stats.events_seen >= 4)
    dash.redraw(force=True)
    model = dash.table_model
    assert model.rowCount() == 4
    cells = [model.data(model.index(0, c)) for c in range(model.columnCount())]
    assert cells[5] == "ollama" and cells[3] == "chat" and cells[-1] == "ok" and cells[1].startswith("OpenAI")
    assert int(dash.card_rate.value.text()) == 4
    x, y = dash.chart_latency.curves["ollama"].getData()
    assert len(x) == 600 and np.isfinite(y).any()
    assert dash.chart_rate.curves["requests/min"].getData()[1].sum() > 0
    assert dash.redraws >= 2
    dash.refresh_history()  # the same rollups as /v1/usage, fetched on the router's loop
    running.wait(lambda: dash.history.rowCount() >= 1)
    row = [dash.history.item(0, c).text() for c in range(dash.history.columnCount())]
    assert row[1] == "ollama" and row[3] == "4"
    assert "Last 30 days: 4 requests" in dash.history_note.text()


def test_a_blocked_ui_thread_does_not_delay_streams(running: Running, upstreams: Upstreams) -> None:
    """Block the UI thread (no Qt events at all) until five streamed requests, one after the
    other from another thread, have finished meanwhile: a stream that needed the UI thread
    would hold up the ones behind it, and the count would never be reached. Counted, not timed."""
    upstreams.ollama.default = Reply(text="a streamed answer in several pieces", pieces=6, chunk_delay_s=0.02)
    running.ask(stream=True)  # warm: connections, discovery
    done: list[float] = []  # when each request finished, perf_counter
    errors: list[BaseException] = []
    go, stop = threading.Event(), threading.Event()

    def client() -> None:
        go.wait()
        with running.client() as c:
            while not stop.is_set():
                try:
                    stream = c.chat.completions.create(
                        model="auto", stream=True, messages=[{"role": "user", "content": "hi"}])
                    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
                    assert text == "a streamed answer in several pieces"
                except BaseException as exc:
                    errors.append(exc)
                    return
                done.append(time.perf_counter())

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.perf_counter() + DEADLINE_S  # bounds a failure only
    go.set()
    while len(done) < 5 and not errors and time.perf_counter() < deadline:  # the UI thread is busy
        time.sleep(0.01)
    block_end = time.perf_counter()
    stop.set()
    thread.join(DEADLINE_S)
    assert not errors, errors
    during = [t for t in done if t <= block_end]
    assert len(during) >= 5, f"only {len(during)} streams completed while the UI was blocked"
    # the events queued meanwhile reach the dashboard once the UI runs again
    running.wait(lambda: running.app.stats.events_seen >= len(done) + 1)


def test_quit_stops_the_server_and_children_and_flushes_usage(qtbot: QtBot, tmp_path: Path,
                                                               upstreams: Upstreams) -> None:
    root = tmp_path / "project-root"
    root.mkdir()
    glyph_cfg = tmp_path / "glyph.toml"
    glyph_cfg.write_text(f'roots = ["{root}"]\ndata_dir = "{tmp_path / "glyph-data"}"\n', encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        glyph_port = s.getsockname()[1]
    import os

    os.environ["OMEN_GLYPH_PORT"] = str(glyph_port)
    try:
        r = start_app(qtbot, make_config(tmp_path, upstreams), glyph=True, glyph_config=glyph_cfg)
        r.wait(lambda: bool(rune_children(root)), timeout_ms=20_000)  # Glyph started Rune
        for _ in range(5):
            r.ask()
        r.ask(stream=True)
        url = r.url
        r.app.quit()
    finally:
        os.environ.pop("OMEN_GLYPH_PORT", None)
    assert wait_port_closed(url)
    assert wait_port_closed(f"http://127.0.0.1:{glyph_port}")
    assert not rune_children(root), "Rune outlived the app"
    assert not r.app.host.router_thread.running
    with sqlite3.connect(tmp_path / "data" / "usage.db") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM usage_event").fetchone()
    assert count == 6  # every attempt reached the store before the app let go


def rune_children(root: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rune" in cmd and str(root).encode() in cmd:
            found.append(int(proc.name))
    return found


def test_no_tray_opens_the_window_hints_once_and_closing_quits(qtbot: QtBot, tmp_path: Path,
                                                               upstreams: Upstreams) -> None:
    config = make_config(tmp_path, upstreams)
    r = start_app(qtbot, config, tray=False, minimized=True)  # minimized is ignored without a tray
    try:
        assert r.app.tray is None
        assert r.app.dashboard.isVisible()
        assert r.app.hint is not None and r.app.hint.isVisible()
        assert "AppIndicator" in r.app.hint.text() and "closing it quits" in r.app.hint.text()
        r.app.hint.accept()
        url = r.url
        r.app.dashboard.close()  # the only window: closing it quits, no invisible process left
        r.wait(lambda: r.app.quitting)
        assert wait_port_closed(url)
    finally:
        r.app.quit()
    again = start_app(qtbot, config, tray=False)
    try:
        assert again.app.hint is None  # told once
    finally:
        again.app.quit()


def test_with_a_tray_closing_the_window_keeps_running(running: Running) -> None:
    running.app.open_dashboard()
    running.app.dashboard.close()
    running.qtbot.wait(100)
    assert not running.app.quitting
    assert running.ask() == "ollama"


def test_port_taken_says_so_and_never_moves(qtbot: QtBot, tmp_path: Path, upstreams: Upstreams) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    config = make_config(tmp_path, upstreams)
    from omen_local import config_edit

    config_edit.set_server(config, port=port)
    from app.controller import OmenApp, Options

    app = OmenApp(Options(config_path=config, tray=True, minimized=True, glyph=False, consent_channel=False,
                          quit_app=False))
    try:
        app.start()
        qtbot.waitUntil(lambda: app.port_dialog is not None and app.port_dialog.isVisible(), timeout=15_000)
        box = app.port_dialog
        assert box is not None
        assert f"127.0.0.1:{port}" in box.text()
        assert "Choose another port…" in [b.text() for b in box.buttons()]
        assert "never moves" in box.informativeText()
        assert app.host.service is None and not app.started_ok  # nothing listening anywhere else
        blocker.close()  # the user stops the other program, then presses Retry
        retry = next(b for b in box.buttons() if b.text() == "Retry")
        with qtbot.waitSignal(app.ready, timeout=15_000):
            retry.click()
        assert app.url.endswith(f":{port}")
    finally:
        blocker.close()
        app.quit()


def test_settings_limits_and_server_apply_without_restart(running: Running, qtbot: QtBot) -> None:
    running.app.open_settings()
    dialog = running.app.settings
    assert dialog is not None
    dialog.limit_edits[("quotas", "user", "owner", "daily_usd")].setText("0")
    dialog._save_limits()
    running.wait(lambda: "saved and applied" in dialog.status.text())
    import openai
    import pytest

    with pytest.raises(openai.APIStatusError) as err:
        running.ask()
    assert err.value.status_code == 402
    assert load_config(running.config).quotas.users["owner"].daily_usd == 0
    dialog.limit_edits[("quotas", "user", "owner", "daily_usd")].setText("")
    dialog._save_limits()
    running.wait(lambda: "owner" not in load_config(running.config).quotas.users)  # no empty table left
    running.wait(lambda: "saved and applied" in dialog.status.text())
    assert running.ask() == "ollama"

    # binding beyond loopback asks first; "Cancel" changes nothing
    dialog.s_host.setCurrentText("0.0.0.0")
    dialog.confirm_exposure = lambda host: False  # type: ignore[method-assign]
    dialog._save_server()
    assert "unchanged" in dialog.status.text()
    assert load_config(running.config).server.host == "127.0.0.1"

    # a port in use: said so, and OMEN stays where it was
    old_url = running.url
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        dialog.s_host.setCurrentText("127.0.0.1")
        dialog.s_port.setValue(blocker.getsockname()[1])
        dialog._save_server()
        running.wait(lambda: "keeps serving where it was" in dialog.status.text())
        assert load_config(running.config).server.port == 0  # the file still says what runs
    assert running.app.url == old_url and running.ask() == "ollama"
    # a free port: OMEN moves there without a restart (the user asked; never on its own)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    dialog.s_port.setValue(free)
    dialog._save_server()
    running.wait(lambda: running.app.url.endswith(f":{free}"))
    assert running.ask() == "ollama" and wait_port_closed(old_url)
    assert isinstance(QMessageBox, type)


def test_dashboard_redraws_on_new_data_and_runs_no_timer_when_idle_or_hidden(running: Running) -> None:
    running.app.open_dashboard()
    dash = running.app.dashboard
    running.wait(lambda: dash.isVisible())
    assert not dash.timer.isActive()  # nothing happened yet: nothing ticks
    before = dash.redraws
    running.ask()
    running.wait(lambda: dash.table_model.rowCount() == 1)  # redrawn because data came, not by a test call
    assert dash.redraws > before
    assert dash.timer.isActive() and dash.timer.interval() == 1000  # the last minute moves on screen
    dash.showMinimized()
    running.wait(lambda: dash.isMinimized())
    assert not dash.timer.isActive()
    dash.hide()
    assert not dash.timer.isActive()
    running.ask()
    running.wait(lambda: running.app.stats.events_seen == 2)
    assert dash.table_model.rowCount() == 1  # hidden: no redraw
    dash.bring_to_front()
    assert dash.table_model.rowCount() == 2  # shown again: whatever came meanwhile, once


def test_view_logs_without_a_file_manager_shows_the_folder_with_copy(running: Running,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from app import logs

    monkeypatch.setattr(shutil, "which", lambda name: None)  # no xdg-open on this desktop
    running.app.open_logs()
    box = running.app.logs_dialog
    assert box is not None and box.isVisible()
    assert box.informativeText() == str(logs.log_dir())
    copy = next(b for b in box.buttons() if b.text() == "Copy path")
    copy.click()
    assert QGuiApplication.clipboard().text() == str(logs.log_dir())


def test_glyph_set_up_after_start_is_picked_up_and_its_audit_tab_appears(qtbot: QtBot, tmp_path: Path,
                                                                        upstreams: Upstreams) -> None:
    import os

    root = tmp_path / "project-root"
    root.mkdir()
    glyph_cfg = tmp_path / "glyph.toml"  # not there yet: Glyph is not set up when the app starts
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["OMEN_GLYPH_PORT"] = str(s.getsockname()[1])
    try:
        r = start_app(qtbot, make_config(tmp_path, upstreams), glyph=True, glyph_config=glyph_cfg)
        try:
            r.app.open_dashboard()
            assert r.app.glyph is None and r.app.dashboard.audit_view is None
            # `glyph init` / an editor writes the file while the app runs
            glyph_cfg.write_text(f'roots = ["{root}"]\ndata_dir = "{tmp_path / "glyph-data"}"\n', encoding="utf-8")
            r.wait(lambda: r.app.glyph is not None, timeout_ms=10_000)
            r.wait(lambda: r.app.dashboard.audit_view is not None, timeout_ms=20_000)
            tabs = r.app.dashboard.tabs
            assert "Tool audit (Glyph)" in [tabs.tabText(i) for i in range(tabs.count())]
        finally:
            r.app.quit()
    finally:
        os.environ.pop("OMEN_GLYPH_PORT", None)
    assert not rune_children(root)


def test_a_ui_attached_after_omen_started_misses_nothing(qtbot: QtBot, tmp_path: Path, upstreams: Upstreams) -> None:
    """main()'s order: OMEN starts and settles (health events, a request) before the UI exists."""
    import openai

    from app.bridge import SERVING, ServiceHost
    from app.controller import OmenApp, Options

    config = make_config(tmp_path, upstreams)
    host = ServiceHost(config)
    host.start()
    assert host.settled.wait(20)
    assert host.phase.kind == SERVING
    with openai.OpenAI(base_url=f"{host.phase.url}/v1", api_key=host.owner_token, max_retries=0) as c:
        c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "before the UI"}])
    qtbot.waitUntil(lambda: len(host.events) >= 1)  # queued for a UI that does not exist yet
    app = OmenApp(Options(config_path=config, tray=True, minimized=True, glyph=False, consent_channel=False,
                          quit_app=False), host=host)
    try:
        with qtbot.waitSignal(app.ready, timeout=10_000):
            app.start()
        qtbot.waitUntil(lambda: app.stats.events_seen == 1)  # the request from before the UI
        assert app.url == host.phase.url and app.last_overall.headline == "Running"
        r = Running(app, config, qtbot)
        r.ask()
        qtbot.waitUntil(lambda: app.stats.events_seen == 2)  # and the wake-up works after it
    finally:
        app.quit()


def test_get_started_start_ollama_button_starts_it_and_the_panel_goes(qtbot: QtBot, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ollama running, its binary installed: the panel offers "Start Ollama"; pressing it runs
    `ollama serve` (here a script standing in for it that serves the fake Ollama on the
    configured port), OMEN finds it, and the panel goes away."""
    import os
    import signal
    import sys

    from tests.app.xdesktop import write_app_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "ollama.pid"
    root = Path(__file__).resolve().parents[2]
    script = bin_dir / "ollama"
    script.write_text(f'#!/bin/sh\n[ "$1" = serve ] || exit 2\necho $$ > "{pid_file}"\ncd "{root}"\n'
                      f'exec "{sys.executable}" -m tests.fakes.serve ollama --port {port}\n', encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    config = write_app_config(tmp_path / "config.toml", tmp_path / "data", f"http://127.0.0.1:{port}")
    r = start_app(qtbot, config, minimized=False)
    try:
        dash = r.app.dashboard
        r.wait(lambda: dash.get_started.isVisible(), timeout_ms=10_000)
        button = dash.get_started.findChild(QPushButton, "step:start_ollama")
        assert button is not None and button.text() == "Start Ollama"
        button.click()
        r.wait(lambda: pid_file.exists(), timeout_ms=10_000)
        r.wait(lambda: not dash.get_started.isVisible(), timeout_ms=20_000)  # OMEN found it: nothing to do
        assert r.ask() == "ollama"
    finally:
        r.app.quit()
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
