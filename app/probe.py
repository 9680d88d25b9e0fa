"""A test-only window into what the user sees, off unless ``OMEN_APP_PROBE`` names a file.

With ``OMEN_APP_PROBE=/some/file``, SIGUSR1 makes the running app write, as JSON, the text
every *visible* window displays: titles, labels, buttons, the rows of visible tables, the
tray's tooltip, menu and the notices it showed. Tests of the real ``omen app`` process
(tests/app/test_live_app.py) read numbers from here exactly, and check with OCR that the
same words are on the screen. Nothing is written, and no handler is installed, without
the variable; it reads widgets only (no state of its own that could disagree with them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QLabel,
    QLineEdit,
    QMenu,
    QTabBar,
    QTableView,
    QWidget,
)

ENV = "OMEN_APP_PROBE"
MAX_ROWS = 50


def probe_path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def _table(view: QTableView) -> dict[str, Any]:
    model = view.model()
    if model is None:
        return {"header": [], "rows": []}
    cols = model.columnCount()
    header = [str(model.headerData(c, Qt.Orientation.Horizontal) or "") for c in range(cols)]
    rows = [[str(model.data(model.index(r, c, QModelIndex())) or "") for c in range(cols)]
            for r in range(min(model.rowCount(), MAX_ROWS))]
    return {"header": header, "rows": rows}


def _center(widget: QWidget, x: int, y: int) -> list[int]:
    point = widget.mapToGlobal(widget.rect().topLeft())
    return [point.x() + x, point.y() + y]


def clickables(window: QWidget) -> dict[str, list[int]]:
    """Screen coordinates of the visible buttons and tabs (for xdotool to click, like a person)."""
    out: dict[str, list[int]] = {}
    for button in window.findChildren(QAbstractButton):
        if button.isVisible() and button.text():
            out[button.text()] = _center(button, button.width() // 2, button.height() // 2)
    if isinstance(window, QMenu):  # a popup menu open on screen (the consent dialog's Remember…)
        for action in window.actions():
            if action.isVisible() and action.text() and not action.isSeparator():
                r = window.actionGeometry(action)
                out["menu:" + action.text()] = _center(window, r.center().x(), r.center().y())
    for bar in window.findChildren(QTabBar):
        if bar.isVisible():
            for i in range(bar.count()):
                r = bar.tabRect(i)
                out["tab:" + bar.tabText(i)] = _center(bar, r.center().x(), r.center().y())
    return out


def window_text(window: QWidget) -> dict[str, Any]:
    """The visible text of one top-level window."""
    return {
        "click": clickables(window),
        "title": window.windowTitle(),
        "object": window.objectName(),
        "class": type(window).__name__,
        "size": [window.width(), window.height()],
        "labels": [w.text() for w in window.findChildren(QLabel) if w.isVisible() and w.text()],
        "buttons": [w.text() for w in window.findChildren(QAbstractButton) if w.isVisible() and w.text()],
        # read-only fields only (what the app shows, e.g. a new token): never what a person types
        "fields": {w.objectName(): w.text() for w in window.findChildren(QLineEdit)
                   if w.isVisible() and w.isReadOnly() and w.objectName()},
        "tables": {(t.objectName() or f"table{i}"): _table(t)
                   for i, t in enumerate(window.findChildren(QTableView)) if t.isVisible()},
    }


def snapshot(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    windows = [window_text(w) for w in QApplication.topLevelWidgets() if w.isVisible() and w.isWindow()]
    return {"windows": windows, **(extra or {})}


def dump(path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(snapshot(extra), indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
