"""The tray icon and its menu, rebuilt each time it opens so it shows live state.

The menu reads the status snapshot the router thread refreshes (``ServiceHost.status``):
opening it never waits on the router. Every entry calls the controller; nothing here
decides a route.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QFontMetrics
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from glyph.display import one_line, visible
from omen_local.config import STRATEGIES
from omen_local.visible import visible as neutralised

from .icons import state_icon
from .rich_text import plain_tip
from .state import NOT_SET_UP, STOPPED, Overall, provider_detail, provider_label, provider_state

STRATEGY_LABELS = {
    "single": "Single (best candidate, fail over)",
    "race": "Race (first token wins)",
    "speculate_k": "Speculate (cheap first, better if slow)",
    "parallel_merge": "Parallel merge",
}


class Controller(Protocol):
    def menu_snapshot(self) -> tuple[Overall, str, dict[str, Any] | None]: ...
    def copy_endpoint(self) -> None: ...
    def set_provider_enabled(self, name: str, enabled: bool) -> None: ...
    def set_default_strategy(self, strategy: str) -> None: ...
    def open_dashboard(self) -> None: ...
    def open_settings(self) -> None: ...
    def open_keys(self) -> None: ...
    def open_logs(self) -> None: ...
    def autostart_enabled(self) -> bool: ...
    def set_autostart(self, on: bool) -> None: ...
    def keep_running(self) -> bool: ...
    def set_keep_running(self, on: bool) -> None: ...
    def quit(self) -> None: ...


MENU_TEXT_PX = 400  # no menu line wider than this (a tray menu is not a log)


def status_line(overall: Overall, url: str) -> str:
    """The menu's first line: the status in words (the endpoint is one click away)."""
    if overall.state == STOPPED and overall.headline == "Stopped":
        return "OMEN is stopped"
    return f"OMEN: {overall.headline}"


def fit(text: str, menu: QMenu, width: int = MENU_TEXT_PX) -> str:
    """Elide ``text`` to ``width`` pixels in the menu's font (the full text goes in a tooltip)."""
    return QFontMetrics(menu.font()).elidedText(text, Qt.TextElideMode.ElideRight, width)


# Where the tray host reads the tooltip as markup when it looks like markup: on X11 Qt shows
# the XEmbed icon's tooltip with QToolTip (Qt::mightBeRichText), and a StatusNotifierItem's
# tooltip text may carry HTML (the SNI spec; Plasma renders it). Windows and macOS show it
# as the text it is.
RICH_TOOLTIPS = sys.platform not in ("win32", "darwin")


def tray_tip(text: str, rich: bool = RICH_TOOLTIPS) -> str:
    """The tray icon's tooltip: provider details are untrusted text, so their control
    characters are made visible (``omen_local.visible``), and where the host reads markup the
    whole is escaped HTML (``app.rich_text.plain_tip``: shown as written, line breaks kept)."""
    return plain_tip(text) if rich else neutralised(text, "\n")


def tooltip(overall: Overall, url: str) -> str:
    lines = [f"OMEN Local: {overall.headline}"]
    if url and overall.state != STOPPED:
        lines.append(f"{url}/v1")
    lines.extend(overall.detail[:4])
    return "\n".join(lines)


class Tray:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.template = sys.platform == "darwin"  # the menu bar recolours a mask icon
        self.icon = QSystemTrayIcon()
        self.menu = QMenu()
        self.menu.setObjectName("tray-menu")
        self.menu.aboutToShow.connect(self.rebuild)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self.state = ""
        self.strategy_menu: QMenu | None = None
        self.set_state(Overall(STOPPED, "Starting…"), "")
        self.rebuild()

    def show(self) -> None:
        self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger and sys.platform != "darwin":
            self.controller.open_dashboard()  # left click: the dashboard (the menu is on right click)

    def set_state(self, overall: Overall, url: str) -> None:
        if overall.state != self.state:
            self.state = overall.state
            self.icon.setIcon(state_icon(overall.state, template=self.template))
        self.icon.setToolTip(tray_tip(tooltip(overall, url)))  # provider details are untrusted text

    def notify(self, title: str, body: str, level: str) -> None:
        icon = {"critical": QSystemTrayIcon.MessageIcon.Critical,
                "warning": QSystemTrayIcon.MessageIcon.Warning}.get(level, QSystemTrayIcon.MessageIcon.Information)
        self.icon.showMessage(one_line(title), visible(body, "\n"), icon, 8000)  # upstream text: made visible

    # ---------------------------------------------------------------- the menu

    def rebuild(self) -> None:
        """Fill the menu from the current state (connected to aboutToShow)."""
        c = self.controller
        overall, url, status = c.menu_snapshot()
        self.set_state(overall, url)
        m = self.menu
        m.clear()
        m.setToolTipsVisible(True)
        # The status reads as a status, not a greyed-out item: bold, enabled, and it opens the
        # dashboard (where the details are).
        head = m.addAction(state_icon(overall.state), fit(status_line(overall, url), m))
        head.setObjectName("status")
        font = head.font()
        font.setBold(True)
        head.setFont(font)
        head.setToolTip(plain_tip("\n".join((status_line(overall, url), *overall.detail))))
        head.triggered.connect(_call(c.open_dashboard))
        for line in overall.detail[:2]:
            extra = m.addAction(fit("    " + line, m))
            extra.setToolTip(plain_tip(line))
            extra.triggered.connect(_call(c.open_dashboard))
        copy = m.addAction(fit(f"Copy endpoint and token ({url}/v1)", m) if url else "Copy endpoint and token")
        copy.setObjectName("copy")
        copy.setEnabled(status is not None)
        copy.triggered.connect(c.copy_endpoint)

        m.addSection("Providers")
        providers = (status or {}).get("providers", {})
        for name, info in providers.items():
            label = provider_label(name, info)
            if provider_state(info) == NOT_SET_UP:  # the action that exists: set it up
                action = m.addAction(fit(label + " — add key…", m))
                action.setObjectName(f"provider:{name}")
                action.triggered.connect(_call(c.open_keys))
            else:
                action = m.addAction(fit(label, m))
                action.setObjectName(f"provider:{name}")
                action.setCheckable(True)
                action.setChecked(bool(info.get("enabled")))
                action.toggled.connect(_bind(c.set_provider_enabled, name))
            action.setToolTip(plain_tip(provider_detail(info)))
        if not providers:
            none = m.addAction("(starting…)")
            none.setEnabled(False)

        strategies = self.strategy_menu = m.addMenu("Default strategy")
        strategies.setObjectName("strategy-menu")
        strategies.menuAction().setObjectName("strategy-menu")
        group = QActionGroup(strategies)
        group.setExclusive(True)
        current = (status or {}).get("default_strategy")
        for strategy in STRATEGIES:
            action = strategies.addAction(STRATEGY_LABELS.get(strategy, strategy))
            action.setObjectName(f"strategy:{strategy}")
            action.setCheckable(True)
            action.setChecked(strategy == current)
            action.setActionGroup(group)
            action.triggered.connect(_bind_bool(c.set_default_strategy, strategy))
        strategies.setEnabled(status is not None)

        m.addSeparator()
        self._plain("Open dashboard", "dashboard", c.open_dashboard)
        self._plain("Settings…", "settings", c.open_settings)
        self._plain("View logs", "logs", c.open_logs)
        m.addSeparator()
        login = m.addAction("Start at login")
        login.setObjectName("autostart")
        login.setCheckable(True)
        login.setChecked(c.autostart_enabled())
        login.toggled.connect(c.set_autostart)
        keep = m.addAction("Keep running in the tray when the window closes")
        keep.setObjectName("keep-running")
        keep.setCheckable(True)
        keep.setChecked(c.keep_running())
        keep.toggled.connect(c.set_keep_running)
        m.addSeparator()
        self._plain("Quit OMEN", "quit", c.quit)

    def _plain(self, text: str, name: str, slot: Callable[[], None]) -> QAction:
        action = self.menu.addAction(text)
        action.setObjectName(name)
        action.triggered.connect(_call(slot))
        return action

    def texts(self) -> list[str]:
        """The menu's entries as text (separators as "---"), for tests and screenshots."""
        out = []
        for a in self.menu.actions():
            if a.isSeparator() and not a.text():
                out.append("---")
            elif a.menu() is not None:
                out.append(a.text() + " >")
            else:
                out.append(a.text())
        return out


def _call(slot: Callable[[], None]) -> Callable[[bool], None]:
    def run(_checked: bool = False) -> None:
        slot()

    return run


def _bind(fn: Callable[[str, bool], None], name: str) -> Callable[[bool], None]:
    return lambda checked: fn(name, checked)


def _bind_bool(fn: Callable[[str], None], value: str) -> Callable[[bool], None]:
    def run(_checked: bool = False) -> None:
        fn(value)

    return run
