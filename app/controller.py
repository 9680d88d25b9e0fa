"""The controller: owns the parts of the tray app, answers the tray and the windows, and
shuts everything down in order (Glyph and its children, the consent channel, OMEN with
its usage flushed). ``app.main`` starts it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QFileSystemWatcher, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QApplication, QInputDialog, QMessageBox, QSystemTrayIcon, QWidget

from omen_local import config_edit
from omen_local.config import Config, ConfigError, default_config_path
from omen_local.metering.rollup import make_query
from omen_local.observe import HealthEvent, UsageEvent
from omen_local.secrets import write_private
from omen_local.service import OmenService

from . import autostart, logs
from .bridge import EVENT_BATCH_MS, ServiceHost
from .paths import prefs_path

if TYPE_CHECKING:
    from .bridge import Phase
    from .dashboard import Dashboard
    from .notify import Notice
    from .state import Overall

log = logging.getLogger("app")
SPEND_EVERY_S = 15.0  # spend totals re-read from the usage store at most this often, on new usage

NO_TRAY_HINT = (
    "Your desktop has no system tray, so OMEN runs as this window: closing it quits OMEN.\n\n"
    "To keep OMEN in the background with a tray icon: on GNOME, install and enable the "
    "\"AppIndicator and KStatusNotifierItem Support\" extension; other desktops: add a "
    "system tray (or status notifier) to the panel. Then start OMEN again."
)


@dataclass
class Options:
    config_path: Path | None = None
    tray: bool | None = None  # None: whatever the desktop offers
    minimized: bool = False
    glyph: bool = True
    glyph_config: Path | None = None
    consent_channel: bool = True
    single_instance: bool = True
    quit_app: bool = True  # quit() ends the Qt application (tests keep theirs)
    settle_gc: bool = False  # once serving, tune the process's collector (omen_local/gc_tuning.py; the real app only)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _restore(path: Path, content: bytes | None) -> None:
    """Put the config file back as it was before an edit that could not be applied."""
    if content is None:
        path.unlink(missing_ok=True)
    else:
        write_private(path, content)


def _trim_heap() -> None:
    from omen_local.memtrim import release_memory

    release_memory(force=True)


class Prefs:
    """The app's own choices (not OMEN's config): kept in app.json beside the config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"keep_running": True, "tray_hint_shown": False}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.data.update(loaded)
        except (OSError, ValueError):
            pass

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        try:
            write_private(self.path, json.dumps(self.data, indent=2).encode())
        except OSError:
            log.exception("cannot save the app's preferences to %s", self.path)


class OmenApp(QObject):
    """The controller: owns the parts, answers the tray and the windows."""

    ready = Signal()  # OMEN serves
    notified = Signal(object)  # a Notice that went out (tests, the log)

    def __init__(self, options: Options, qapp: QApplication | None = None, host: ServiceHost | None = None) -> None:
        super().__init__()
        # OMEN may already be starting on its thread (main() starts it first); the UI's
        # heavier modules (charts, numpy) load meanwhile, and the dashboard only when shown.
        from .consent_dialog import QtPrompter
        from .notify import Notices
        from .state import LiveStats, Overall
        from .tray import Tray

        self.options = options
        self.qapp = qapp or QApplication.instance()
        self.prefs = Prefs(prefs_path())
        self.host = host or ServiceHost(options.config_path)
        self.host.setParent(self)
        self.stats = LiveStats()
        self.notices = Notices()
        # The dialog counts down Glyph's default prompt_timeout_s; a Glyph that gives up
        # sooner closes it earlier (a denial either way).
        self.prompter = QtPrompter(timeout_s=120.0)
        self.consent_server: Any = None
        self.glyph: Any = None
        self.glyph_config: Any = None
        self.settings: Any = None
        self.port_dialog: QMessageBox | None = None
        self.error_dialog: QMessageBox | None = None
        self.hint: QMessageBox | None = None
        self.logs_dialog: QMessageBox | None = None
        self.quitting = False
        self.started_ok = False
        self.url = ""
        self.last_overall = Overall("stopped", "Starting…")
        self.tray_available = (QSystemTrayIcon.isSystemTrayAvailable() if options.tray is None else options.tray)
        self.tray: Tray | None = Tray(self) if self.tray_available else None
        self._dashboard: Dashboard | None = None
        self.spend = (0.0, 0.0)  # today, this month (from the usage store)
        self.shown_notices: deque[Notice] = deque(maxlen=20)

        self._spend_at = 0.0  # when the spend totals were last read from the usage store
        self.glyph_watch = QFileSystemWatcher(self)
        self.glyph_watch.fileChanged.connect(self._glyph_config_touched)
        self.glyph_watch.directoryChanged.connect(self._glyph_config_touched)
        self._glyph_touch_pending = False
        self._phase_seen: Phase | None = None
        # Connect first, then read the state: whatever happened before (OMEN may be serving,
        # or have failed, with events queued) is in the snapshot; whatever happens after is
        # signalled. The handlers read state, so seeing a change twice is harmless.
        self.host.phase_changed.connect(self._on_phase)
        self.host.events_ready.connect(self._on_events)
        self.host.status_changed.connect(self._on_status)
        self._attached_events = self.host.attach().events  # taken once the tray shows (start())
        QTimer.singleShot(0, self._after_attach)

    @property
    def dashboard(self) -> Dashboard:
        """The main window, built the first time it is needed (start-up does not wait for charts)."""
        if self._dashboard is None:
            from .dashboard import Dashboard

            self._dashboard = Dashboard(self.stats, self.copy_endpoint, self.fetch_history, self._audit_view(),
                                        on_step=self.do_step)
            self._dashboard.closing.connect(self._dashboard_closed)
            self._show_status(self._dashboard)
        return self._dashboard

    # ---------------------------------------------------------------- start

    def _after_attach(self) -> None:
        """Once the event loop runs: apply the phase and status read at attach, take what
        queued meanwhile, and rearm the wake-up."""
        self._on_phase()
        self._on_status()
        events, self._attached_events = self._attached_events, []
        self._take(events)
        self._rearm_events()

    def _on_phase(self) -> None:
        """OMEN's start-up phase changed (or we attached): act once per phase object."""
        from .bridge import FAILED, PORT_TAKEN, SERVING

        phase = self.host.phase
        if phase is self._phase_seen or self.quitting:
            return
        self._phase_seen = phase
        if phase.kind == SERVING:
            self._on_started(phase.url)
        elif phase.kind == PORT_TAKEN:
            self._on_port_taken(phase.host, phase.port, phase.message)
        elif phase.kind == FAILED:
            self._on_failed(phase.message)
        self._on_status()

    def start(self) -> None:
        if not self.host.router_thread.running:
            self.host.start()
        if self.options.consent_channel:
            from .consent_server import ConsentServer

            try:
                self.consent_server = ConsentServer(self.prompter)
                self.consent_server.start()
            except Exception:
                log.exception("the consent channel could not start; external Glyphs fall back")
                self.consent_server = None
        if self.tray is not None:
            self.tray.show()
            if not self.options.minimized:
                self.dashboard.bring_to_front()
        else:
            self.dashboard.bring_to_front()
            if not self.prefs.get("tray_hint_shown"):
                self.prefs.set("tray_hint_shown", True)
                self.hint = QMessageBox(QMessageBox.Icon.Information, "OMEN Local: no system tray", NO_TRAY_HINT,
                                        QMessageBox.StandardButton.Ok, self.dashboard)
                self.hint.setObjectName("no-tray-hint")
                self.hint.open()

    def _on_started(self, url: str) -> None:
        if self.started_ok or not url:
            return
        self.started_ok = True
        self.url = url
        log.info("OMEN serving at %s/v1 (%.0f ms after start)", url, (time.perf_counter() - self.host.started_at) * 1000)
        if self.host.status is not None:
            self.stats.set_providers(self.host.status.get("providers", {}))
        self._on_status()
        self.refresh_spend()
        self._start_glyph()
        self._watch_glyph_config()
        if self.options.settle_gc:  # what start-up made (OMEN, the tray, Glyph) out of the collector's walks
            from omen_local import gc_tuning

            gc_tuning.settle()
        # Start-up's garbage (imports, discovery, the first status) leaves freed pages in
        # glibc's arenas: hand them back once the app has settled (tray-only RSS).
        QTimer.singleShot(3000, _trim_heap)
        self.ready.emit()

    def _start_glyph(self) -> None:
        if not self.options.glyph or self.glyph is not None:
            return
        try:
            from glyph.config import load_config as load_glyph

            config = load_glyph(self.options.glyph_config)
        except Exception as exc:
            log.warning("Glyph is not started: %s", exc)
            return
        self.glyph_config = config
        if not config.servers:
            log.info("Glyph has no roots or servers configured; not started (see docs/glyph.md)")
            return
        from glyph.http_auth import TokenFileError, load_or_create, token_path

        from .glyph_host import GlyphHost

        # Glyph's own token, never OMEN's owner token: an MCP client cannot tell who listens on
        # Glyph's port, so whatever it sends there must be worthless to OMEN.
        try:
            token, _created = load_or_create(token_path(config.data_dir))
        except (TokenFileError, OSError) as exc:
            log.warning("Glyph is not started: %s", exc)
            return
        port = int(os.environ.get("OMEN_GLYPH_PORT", "8767"))
        self.glyph = GlyphHost(config, self.prompter, port=port, token=token,
                               on_ready=lambda why: self.host.relay.post(self._glyph_ready, (why, port)))
        self.glyph.start()

    def _glyph_ready(self, arg: tuple[str | None, int]) -> None:
        why, port = arg
        log.info("Glyph: %s", why or f"serving on port {port}")
        if why is None:
            self._ensure_audit_tab()

    def _ensure_audit_tab(self) -> None:
        if self._dashboard is not None and self._dashboard.audit_view is None:
            view = self._audit_view()
            if view is not None:
                self._dashboard.add_audit_view(view)

    def _watch_glyph_config(self) -> None:
        """Glyph set up after start (`glyph init`, an edit of glyph.toml) is picked up without a
        restart: the file and its folder are watched (inotify and the like; nothing polls)."""
        if not self.options.glyph:
            return
        from glyph.config import default_config_path as glyph_default

        path = self.options.glyph_config or glyph_default()
        watched = set(self.glyph_watch.files()) | set(self.glyph_watch.directories())
        for candidate in (path, path.parent):
            if candidate.exists() and str(candidate) not in watched:
                self.glyph_watch.addPath(str(candidate))

    def _glyph_config_touched(self, _path: str = "") -> None:
        if not self._glyph_touch_pending:
            self._glyph_touch_pending = True
            QTimer.singleShot(300, self._glyph_config_settled)  # an editor writes in several steps

    def _glyph_config_settled(self) -> None:
        self._glyph_touch_pending = False
        self._watch_glyph_config()  # a replaced file is a new inode: watch it again
        if self.glyph is None and not self.quitting:
            self._start_glyph()

    def _on_port_taken(self, host: str, port: int, message: str) -> None:
        from .notify import CRITICAL, Notice

        self._notify(Notice(f"port:{port}", f"Port {port} is in use",
                            f"OMEN cannot listen on {host}:{port}. Stop the other program and press Retry, "
                            "or choose another port.", CRITICAL))
        box = self.port_dialog = QMessageBox(self._dashboard if self._dashboard and self._dashboard.isVisible() else None)
        box.setObjectName("port-taken")
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("OMEN Local: port in use")
        box.setText(f"OMEN cannot listen on {host}:{port}: {message}.")
        box.setInformativeText(
            "Another program is using this port: perhaps `omen serve` or another OMEN. Stop it and "
            "press Retry, or choose another port (then point your clients at the new address). "
            "OMEN never moves to another port on its own.")
        retry = box.addButton("Retry", QMessageBox.ButtonRole.AcceptRole)
        other = box.addButton("Choose another port…", QMessageBox.ButtonRole.ActionRole)
        box.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(retry)

        def answered(_result: int) -> None:
            clicked = box.clickedButton()
            if clicked is retry:
                self.host.start()
            elif clicked is other:
                self.choose_port(port)
            else:
                self.quit()

        box.finished.connect(answered)
        box.open()

    def choose_port(self, current: int) -> None:
        port, ok = QInputDialog.getInt(None, "OMEN Local: port", "Port for OMEN's endpoint:", current + 1, 1, 65535)
        if not ok:
            self.quit()
            return
        try:
            config_edit.set_server(self.config_path, port=port)
        except (ConfigError, OSError) as exc:
            self._on_failed(f"cannot save the port: {exc}")
            return
        self.host.start()

    def _on_failed(self, why: str) -> None:
        log.error("OMEN cannot start: %s", why)
        box = self.error_dialog = QMessageBox(QMessageBox.Icon.Critical, "OMEN Local cannot start", why,
                                              QMessageBox.StandardButton.Close)
        box.setObjectName("start-failed")
        box.setInformativeText(f"Fix it and start OMEN again. The log is in {logs.log_dir()}.")
        box.finished.connect(lambda _r: self.quit())
        box.open()

    # ---------------------------------------------------------------- live updates

    def _on_events(self) -> None:
        """Woken by the router thread: take what is there, then stay quiet for a moment so a
        busy router wakes this thread (and takes the GIL from requests) only a few times a second."""
        self._take(self.host.drain(rearm=False))
        QTimer.singleShot(EVENT_BATCH_MS, self._rearm_events)

    def _rearm_events(self) -> None:
        self._take(self.host.drain(rearm=True))

    def _take(self, events: list[Any]) -> None:
        if not events:
            return
        now = time.time()
        for event in events:
            if isinstance(event, UsageEvent):
                failover = self.stats.add(event)
                if failover is not None:
                    self._notify(self.notices.failover(failover, now))
            elif isinstance(event, HealthEvent):
                if event.detail:
                    log.info("%s is %s: %s", event.provider, event.state, event.detail)  # the words as they came
                # the notice says it in short words; the library's text stays in the log
                self._notify(self.notices.health(dataclasses.replace(event, detail=None), now))
        if self._dashboard is not None:
            self._dashboard.mark_dirty()
            if self._dashboard.on_screen() and now - self._spend_at >= SPEND_EVERY_S:
                self.refresh_spend()  # reconcile with the store now and then, only while someone looks

    def _on_status(self) -> None:
        from .state import overall, quota_fractions

        status = self.host.status
        fractions = quota_fractions(self.host.quota_used, self.host.quota_limits)
        self.last_overall = self._phase_overall() or overall(status, fractions, self.host.running)
        if status is not None:
            self.url = status.get("url", self.url)
            self.stats.set_providers(status.get("providers", {}))  # providers may come and go
        if self.tray is not None:
            self.tray.set_state(self.last_overall, self.url)
        if self._dashboard is not None:
            self._show_status(self._dashboard)
        now = time.time()
        for notice in self.notices.quotas(fractions, now):
            self._notify(notice)

    def _show_status(self, dashboard: Dashboard) -> None:
        from .state import DOWN_STATE, get_started, provider_detail, provider_state

        status = self.host.status
        providers = (status or {}).get("providers", {})
        details = "\n".join(f"{n}: {provider_detail(p)}" for n, p in providers.items()
                             if provider_state(p) == DOWN_STATE and provider_detail(p))
        dashboard.set_overall(self.last_overall, self.url, details)
        dashboard.set_spend(*self.spend, self.host.quota_limits, self.host.quota_used)
        dashboard.set_get_started(get_started(status, shutil.which("ollama") is not None)
                                  if self.host.phase.kind == "serving" else [])

    def do_step(self, action: str) -> None:
        """A "Get started" button."""
        from .state import OPEN_KEYS, START_OLLAMA

        if action == OPEN_KEYS:
            self.open_keys()
        elif action == START_OLLAMA:
            self.start_ollama()

    def start_ollama(self) -> None:
        """``ollama serve`` in a session of its own (it outlives the app, as when started by hand);
        OMEN re-reads its config, which probes Ollama again, once it had a moment to listen."""
        binary = shutil.which("ollama")
        if binary is None:
            return
        log.info("starting Ollama: %s serve", binary)
        try:
            subprocess.Popen([binary, "serve"], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            log.error("could not start Ollama: %s", exc)
            return
        for delay_ms in (2000, 6000):
            QTimer.singleShot(delay_ms, self._reprobe)

    def _reprobe(self) -> None:
        if not self.quitting and self.host.running:
            self.reload()

    def _phase_overall(self) -> Overall | None:
        """While OMEN does not serve, the phase is the status (not a bare "Stopped")."""
        from .bridge import FAILED, PORT_TAKEN, STARTING
        from .state import STOPPED, Overall

        phase = self.host.phase
        if phase.kind == STARTING:
            return Overall(STOPPED, "Starting…")
        if phase.kind == PORT_TAKEN:
            return Overall(STOPPED, f"Port {phase.port} is in use",
                           ("Another program uses it: stop it and press Retry, or choose another port.",))
        if phase.kind == FAILED:
            return Overall(STOPPED, "OMEN cannot start", ("The log has the details.",))
        return None

    def _notify(self, notice: Notice | None) -> None:
        if notice is None:
            return
        log.info("notice: %s: %s", notice.title, notice.body)
        if self.tray is not None:
            self.tray.notify(notice.title, notice.body, notice.level)
        self.shown_notices.append(notice)
        self.notified.emit(notice)

    def refresh_spend(self) -> None:
        now = self._spend_at = time.time()

        async def fetch(service: OmenService) -> tuple[float, float]:
            if service.metering is None:
                return 0.0, 0.0
            today = await service.metering.rollup(make_query({"from": "today"}, now))
            month = await service.metering.rollup(make_query({"from": "month"}, now))
            return float(today["total"]["cost_usd"]), float(month["total"]["cost_usd"])

        def done(fut: concurrent.futures.Future[tuple[float, float]]) -> None:
            if fut.exception() is None:
                today, month = fut.result()
                self.stats.reset_live_cost(now)
                self.spend = (today, month)
                if self._dashboard is not None:
                    self._dashboard.set_spend(today, month, self.host.quota_limits, self.host.quota_used)

        if self.host.running:
            self.host.call(fetch, done)

    def fetch_history(self, show: Callable[[dict[str, Any]], None]) -> None:
        now = time.time()

        async def fetch(service: OmenService) -> dict[str, Any]:
            if service.metering is None:
                return {"data": [], "total": {}}
            return await service.metering.rollup(make_query({"from": "30d", "group_by": "provider,model,day"}, now))

        def done(fut: concurrent.futures.Future[dict[str, Any]]) -> None:
            if fut.exception() is None:
                show(fut.result())
            else:
                show({"data": [], "total": {}})

        self.host.call(fetch, done)

    # ---------------------------------------------------------------- the tray's controller interface

    @property
    def config_path(self) -> Path:
        return self.options.config_path or default_config_path()

    def menu_snapshot(self) -> tuple[Overall, str, dict[str, Any] | None]:
        return self.last_overall, self.url, self.host.status

    def probe_extra(self) -> dict[str, Any]:
        """The tray's side of what the user sees, for the test-only probe (app/probe.py)."""
        tray: dict[str, Any] | None = None
        if self.tray is not None:
            menu = self.tray.menu
            if not menu.isVisible():
                self.tray.rebuild()  # what opening it would show (an open menu is left alone)
            geo = self.tray.icon.geometry()
            tray = {"tooltip": self.tray.icon.toolTip(), "menu": self.tray.texts(), "visible": self.tray.icon.isVisible(),
                    "icon": [geo.center().x(), geo.center().y()] if geo.isValid() else None,
                    "menu_open": menu.isVisible(),
                    "menu_items": {a.text(): [menu.mapToGlobal(menu.actionGeometry(a).center()).x(),
                                              menu.mapToGlobal(menu.actionGeometry(a).center()).y()]
                                   for a in menu.actions() if menu.isVisible() and a.text()}}
        return {"tray": tray, "notices": [[n.title, n.body] for n in self.shown_notices]}

    def copy_endpoint(self) -> None:
        clip = QGuiApplication.clipboard()
        # The endpoint file's client token (user `local`), not the owner token: whatever lands on
        # the clipboard ends up in editors' configs, and cannot manage OMEN.
        token = self.host.client_token or self.host.owner_token
        text = f"OPENAI_BASE_URL={self.url}/v1\nOPENAI_API_KEY={token}\n"
        if self.glyph is not None and self.glyph.token:  # Glyph's own token (glyph/http_auth.py)
            text += f"GLYPH_MCP_URL={self.glyph.url}\nGLYPH_HTTP_TOKEN={self.glyph.token}\n"
        clip.setText(text)

    def apply(self, *edits: config_edit.Edit, done: Callable[[BaseException | None], None] | None = None) -> None:
        """Write the edits to the user's config (off the UI thread) and reload OMEN with it."""
        path = self.config_path

        async def run(service: OmenService) -> Config:
            before = await asyncio.to_thread(_read_or_none, path)
            config = await asyncio.to_thread(config_edit.apply, path, *edits)
            try:
                await service.reload(config)
            except BaseException:  # not applied (a port in use...): the file says what runs
                await asyncio.to_thread(_restore, path, before)
                raise
            self.host.config = config
            self.host._refresh_status()
            return config

        def finished(fut: concurrent.futures.Future[Config]) -> None:
            exc = fut.exception()
            if exc is not None:
                log.error("could not apply the change: %s", exc)
                if done is None:
                    QMessageBox.warning(self._dashboard, "OMEN Local", f"The change was not applied: {exc}")
            self._on_status()
            if done is not None:
                done(exc)

        self.host.call(run, finished)

    def reload(self, done: Callable[[BaseException | None], None] | None = None) -> None:
        """Re-read the config (and the keys it names) and apply it, without writing anything."""
        path = self.options.config_path

        async def run(service: OmenService) -> None:
            from omen_local.config import load_config

            config = await asyncio.to_thread(load_config, path)
            await service.reload(config)
            self.host.config = config
            self.host._refresh_status()

        def finished(fut: concurrent.futures.Future[None]) -> None:
            self._on_status()
            if done is not None:
                done(fut.exception())

        self.host.call(run, finished)

    def restart_glyph(self) -> None:
        """Stop Glyph (and its children) and start it with the config on disk; off the UI thread."""
        old, self.glyph = self.glyph, None

        def restart() -> None:
            if old is not None:
                old.stop()

        def run() -> None:
            try:
                restart()
            finally:
                self.host.relay.post(lambda _a: self._start_glyph(), None)

        threading.Thread(target=run, name="glyph-restart", daemon=True).start()

    def set_provider_enabled(self, name: str, enabled: bool, done: Callable[[BaseException | None], None] | None = None
                             ) -> None:
        self.apply(config_edit.provider_enabled(name, enabled), done=done)

    def set_default_strategy(self, strategy: str) -> None:
        self.apply(config_edit.default_strategy(strategy))

    def open_dashboard(self) -> None:
        self.dashboard.bring_to_front()
        if self.started_ok:
            self.refresh_spend()

    def open_keys(self) -> None:
        """Settings, on the API keys page (a provider that is not set up needs its key)."""
        self.open_settings()
        if self.settings is not None:
            tabs = self.settings.tabs
            for i in range(tabs.count()):
                if tabs.tabText(i) == "API keys":
                    tabs.setCurrentIndex(i)

    def open_settings(self) -> None:
        from .settings import SettingsDialog

        if self.settings is None:
            self.settings = SettingsDialog(self)
        self.settings.load()
        self.settings.show()
        self.settings.raise_()
        self.settings.activateWindow()

    def open_logs(self) -> None:
        """The log folder in the file manager; where none is registered, its path with Copy."""
        folder = logs.log_dir()
        no_opener = sys.platform.startswith("linux") and shutil.which("xdg-open") is None
        if no_opener or not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.show_log_folder(folder)

    def show_log_folder(self, folder: Path) -> None:
        box = self.logs_dialog = QMessageBox(QMessageBox.Icon.Information, "OMEN Local: logs",
                                             "No file manager is set up to open the log folder. The logs are in:",
                                             QMessageBox.StandardButton.Close)
        box.setObjectName("log-folder")
        box.setInformativeText(str(folder))
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        copy = box.addButton("Copy path", QMessageBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda _c=False: QGuiApplication.clipboard().setText(str(folder)))
        box.open()

    def autostart_enabled(self) -> bool:
        return autostart.is_enabled()

    def set_autostart(self, on: bool) -> None:
        if on:
            where = autostart.enable()
            log.info("start at login: on (%s)", where)
        else:
            autostart.disable()
            log.info("start at login: off")

    def keep_running(self) -> bool:
        return bool(self.prefs.get("keep_running"))

    def set_keep_running(self, on: bool) -> None:
        self.prefs.set("keep_running", on)

    def _dashboard_closed(self) -> None:
        if self.quitting:
            return
        if self.tray is None or not self.keep_running():
            QTimer.singleShot(0, self.quit)

    def _audit_view(self) -> QWidget | None:
        try:
            from glyph.audit import AuditLog
            from glyph.config import load_config as load_glyph
            from glyph.db import Store

            from .audit_view import AuditView

            config = load_glyph(self.options.glyph_config)
            if not config.db_path.exists():
                return None
            self._audit_store = Store(config.db_path)
            return AuditView(AuditLog(self._audit_store))
        except Exception:
            log.exception("the audit view is not available")
            return None

    # ---------------------------------------------------------------- quit

    def quit(self) -> None:
        """Stop everything the app started, flush usage, and leave."""
        if self.quitting:
            return
        self.quitting = True
        log.info("quitting")
        if self._dashboard is not None:
            self._dashboard.timer.stop()
        if self.glyph is not None:
            self.glyph.stop()  # its downstream servers (Rune...) end with it
        if self.consent_server is not None:
            self.consent_server.stop()
        self.host.stop()  # OMEN: listener closed, in-flight requests done, usage flushed
        if self.tray is not None:
            self.tray.hide()
        for window in (self._dashboard, self.settings, self.hint, self.port_dialog):
            if window is not None:
                window.close()
        log.info("stopped")
        if self.qapp is not None and self.options.quit_app:
            self.qapp.quit()


