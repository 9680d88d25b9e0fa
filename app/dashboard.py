"""The dashboard window: live charts (pyqtgraph), spend against quotas, recent requests,
history from the usage store, Glyph's audit log.

Charts redraw from ``LiveStats`` (fixed-size rings) when new data arrives, at most once a
second, and only while the window is on screen (not hidden, not minimised). While the
last minute had requests, a 1 s tick lets the lines and the per-minute card move on;
while the last ten minutes did, a 5 s tick; after that nothing runs at all: an idle
dashboard costs nothing (bench/app_idle.py). Each redraw is a handful of ``setData``
calls on 600-point arrays.
The recent-requests table is a model over a bounded deque. History comes from the same
rollups as ``/v1/usage``, fetched on the router's loop without blocking this thread.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QCloseEvent, QColor, QFont, QGuiApplication, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from . import theme
from .icons import COLORS, app_icon
from .rich_text import plain_tip
from .state import STOPPED, LiveStats, Overall, RequestRow, Step
from .theme import Theme

FloatArray = npt.NDArray[np.float64]

COLUMNS = ("time", "client", "user", "intent", "strategy", "provider", "model", "tokens", "cost", "latency",
           "TTFT", "outcome")
OUTCOME_COLORS = {"ok": None, "error": QColor("#c62828"), "cancelled": QColor("#8a8f98"),
                  "budget_cut": QColor("#e0a100")}

pg.setConfigOptions(antialias=True, background="w", foreground="#3a4250")


def money(usd: float) -> str:
    """One cost format everywhere: ``$0``, ``<$0.0001``, ``$0.0006``, ``$0.042``, ``$1.25``, ``$1,234.50``."""
    if usd == 0:
        return "$0"
    if usd < 0.0001:
        return "<$0.0001"
    if usd < 0.01:
        return f"${usd:.4f}".rstrip("0")
    if usd < 1:
        return f"${usd:.3f}".rstrip("0").rstrip(".")
    return f"${usd:,.2f}"


NUMERIC = (7, 8, 9, 10)  # tokens, cost, latency, TTFT: right-aligned, under right-aligned headers
RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
LEFT = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)


class RequestsModel(QAbstractTableModel):
    """The recent requests (newest first), a snapshot of ``LiveStats.recent``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RequestRow] = []

    def set_rows(self, rows: list[RequestRow]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return RIGHT if section in NUMERIC else LEFT
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                datetime.fromtimestamp(row.time).strftime("%H:%M:%S"), row.client, row.user, row.intent,
                row.strategy, row.provider, row.model, f"{row.tokens:,}", money(row.cost_usd),
                f"{row.latency_ms:,.0f} ms", "" if row.ttft_ms is None else f"{row.ttft_ms:,.0f} ms", row.outcome,
            )[col]
        if role == Qt.ItemDataRole.ForegroundRole and col == len(COLUMNS) - 1:
            return OUTCOME_COLORS.get(row.outcome)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return RIGHT if col in NUMERIC else LEFT
        if role == Qt.ItemDataRole.ToolTipRole:
            when = datetime.fromtimestamp(row.time).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
            return f"{when} · request {row.request_id}" if col == 0 else f"request {row.request_id}"
        return None


class Card(QFrame):
    """A number with a caption, and an optional bar against a limit."""

    def __init__(self, caption: str, with_bar: bool = False) -> None:
        super().__init__()
        self.setObjectName("card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        layout.setSpacing(2)
        self.caption = QLabel(caption)
        self.caption.setObjectName("caption")
        self.value = QLabel("—")
        self.value.setObjectName("value")
        self.note = QLabel("")
        self.note.setObjectName("note")
        layout.addWidget(self.caption)
        layout.addWidget(self.value)
        self.bar: QProgressBar | None = None
        if with_bar:
            self.bar = QProgressBar()
            self.bar.setRange(0, 1000)
            self.bar.setTextVisible(False)
            self.bar.setFixedHeight(6)
            layout.addWidget(self.bar)
        layout.addWidget(self.note)

    def set(self, value: str, note: str = "", fraction: float | None = None) -> None:
        self.value.setText(value)
        self.note.setText(note)
        if self.bar is not None:
            self.bar.setVisible(fraction is not None)
            if fraction is not None:
                self.bar.setValue(int(min(1.0, fraction) * 1000))
                color = "#d23b3b" if fraction >= 1 else "#e0a100" if fraction >= 0.8 else "#2e9d5b"
                self.bar.setStyleSheet(f"QProgressBar::chunk {{ background: {color}; border-radius: 3px; }}")


ZERO_LABEL_PX = 8.0  # half a tick label's height, left under the zero line


class Chart(pg.PlotWidget):  # type: ignore[misc]
    """A time chart: a clock axis, y from zero in a unit people read, a legend above the
    data, one curve per series name, and "No requests yet" instead of an invented range."""

    def __init__(self, title: str, unit: str, look: Theme) -> None:
        super().__init__(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.look = look
        self.setBackground(look.card)
        self.setTitle(f"<span style='font-size:10.5pt;color:{look.text}'>{title}</span>")
        for name in ("left", "bottom"):
            axis = self.getAxis(name)
            axis.setPen(pg.mkPen(look.border))
            axis.setTextPen(pg.mkPen(look.muted))
        self.getAxis("left").enableAutoSIPrefix(False)  # "per s (x0.001)" is nobody's unit
        self.unit = ""
        self.set_unit(unit)
        self.showGrid(x=True, y=True, alpha=look.grid_alpha)
        self.setMouseEnabled(x=False, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        self.getPlotItem().layout.setContentsMargins(4, 4, 10, 4)
        back = QColor(look.card)
        back.setAlpha(215)
        self.legend = self.addLegend(offset=(8, 4), labelTextSize="8.5pt", brush=pg.mkBrush(back),
                                     labelTextColor=look.text)
        self.empty = pg.TextItem("No requests yet", color=look.muted, anchor=(0.5, 0.5))
        self.addItem(self.empty, ignoreBounds=True)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._framed: tuple[float, float, float] | None = None
        self.setMinimumHeight(150)

    def set_unit(self, unit: str) -> None:
        if unit != self.unit:
            self.unit = unit
            self.setLabel("left", unit, color=self.look.muted)

    def curve(self, name: str, color: str, *, fill: bool = False, dash: bool = False) -> pg.PlotDataItem:
        found = self.curves.get(name)
        if found is None:
            pen = pg.mkPen(color, width=1,  # 1 px: Qt's fast path; 2 px costs ten times the paint time
                           style=Qt.PenStyle.DashLine if dash else Qt.PenStyle.SolidLine)
            kwargs: dict[str, Any] = {"pen": pen, "name": name, "connect": "finite"}
            if fill:
                c = QColor(color)
                c.setAlpha(50)
                kwargs.update(fillLevel=0, brush=pg.mkBrush(c))
            found = self.curves[name] = self.plot([], [], **kwargs)
        return found

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        framed = self.__dict__.get("_framed")  # None while PlotWidget's own __init__ resizes
        if framed is not None:
            self.frame(*framed)  # the room under zero is in pixels

    def frame(self, start: float, end: float, top: float) -> None:
        """x from ``start`` to ``end``; y from zero to above ``top`` (room for the legend), or
        the empty state when there is nothing to show."""
        self._framed = (start, end, top)
        self.setXRange(start, end, padding=0)
        empty = not (top > 0 and math.isfinite(top))
        self.empty.setVisible(empty)
        self.legend.setVisible(not empty)
        self.getAxis("left").setStyle(showValues=not empty)  # no invented scale under "No requests yet"
        for curve in self.curves.values():
            curve.setVisible(not empty)
        if empty:
            self.setYRange(0, 1, padding=0)
            self.empty.setPos((start + end) / 2, 0.5)
        else:
            # Room below zero for half a line of text: pyqtgraph drops a tick label that would
            # cross the plot's edge, and the 0 is the label that says where the axis starts.
            span = top * 1.35
            below = span * ZERO_LABEL_PX / max(self.getViewBox().height(), 60.0)
            self.setYRange(-below, span, padding=0)


def latency_unit(values: list[FloatArray]) -> tuple[str, float]:
    """ms, or s when the largest value is 2 s or more: (the axis label, the divisor)."""
    top = max((float(np.nanmax(v)) for v in values if np.isfinite(v).any()), default=0.0)
    return ("s", 1000.0) if top >= 2000 else ("ms", 1.0)


def finite_max(values: list[FloatArray]) -> float:
    return max((float(np.nanmax(v)) for v in values if np.isfinite(v).any()), default=0.0)


class Dashboard(QMainWindow):
    """The main window. ``closing`` fires when the user closes it (the app decides: hide or quit)."""

    closing = Signal()

    def __init__(self, stats: LiveStats, copy_endpoint: Callable[[], None] | None = None,
                 fetch_history: Callable[[Callable[[dict[str, Any]], None]], None] | None = None,
                 audit_view: QWidget | None = None, on_step: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.stats = stats
        self.on_step = on_step
        self._steps: list[Step] = []
        self.fetch_history = fetch_history
        self.setWindowTitle("OMEN Local")
        self.setWindowIcon(app_icon())
        self.setObjectName("dashboard")
        self.resize(*first_size())
        self.look = theme.current()
        self.setStyleSheet(self.look.style_sheet())
        self.redraws = 0
        self.spend_today = 0.0
        self.spend_month = 0.0
        self.quota_limits: dict[str, dict[str, float]] = {}
        self.quota_used: dict[str, tuple[float, float]] = {}
        self._dirty_table = True
        self.paused_until = 0.0

        central = QWidget()
        central.setObjectName("central")
        root = QVBoxLayout(central)
        root.setContentsMargins(18, 14, 18, 14)
        root.setSpacing(12)

        header = QHBoxLayout()
        self.state_dot = QLabel("●")
        self.state_dot.setStyleSheet(f"color: {COLORS[STOPPED].name()}; font-size: 18px;")
        self.headline = QLabel("Starting…")
        self.headline.setObjectName("headline")
        self.endpoint = QLabel("")
        self.endpoint.setObjectName("endpoint")
        self.endpoint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        header.addWidget(self.state_dot)
        header.addWidget(self.headline)
        header.addSpacing(12)
        header.addWidget(self.endpoint)
        header.addStretch(1)
        if copy_endpoint is not None:
            copy = QPushButton("Copy endpoint and token")
            copy.clicked.connect(copy_endpoint)
            header.addWidget(copy)
        root.addLayout(header)
        self.detail = QLabel("")
        self.detail.setTextFormat(Qt.TextFormat.PlainText)  # provider states (names from the config)
        self.detail.setObjectName("detail")
        self.detail.setWordWrap(True)  # never widens the window
        self.detail.setVisible(False)
        root.addWidget(self.detail)

        self.get_started = QFrame()
        self.get_started.setObjectName("getstarted")
        self.steps_layout = QVBoxLayout(self.get_started)
        self.steps_layout.setContentsMargins(16, 12, 16, 12)
        self.steps_layout.setSpacing(8)
        self.get_started.setVisible(False)
        root.addWidget(self.get_started)

        cards = QHBoxLayout()
        cards.setSpacing(12)
        self.card_rate = Card("Requests / min")
        self.card_ttft = Card("Time to first token")
        self.card_today = Card("Spend today", with_bar=True)
        self.card_month = Card("Spend this month", with_bar=True)
        self.card_failovers = Card("Failovers")
        for card in (self.card_rate, self.card_ttft, self.card_today, self.card_month, self.card_failovers):
            cards.addWidget(card, 1)
        root.addLayout(cards)

        charts = QGridLayout()
        charts.setSpacing(10)
        self.chart_ttft = Chart("Time to first token by provider", "ms", self.look)
        self.chart_latency = Chart("Total latency by provider", "ms", self.look)
        self.chart_rate = Chart("Requests and failovers", "requests/min", self.look)
        charts.addWidget(self.chart_ttft, 0, 0)
        charts.addWidget(self.chart_latency, 0, 1)
        charts.addWidget(self.chart_rate, 1, 0, 1, 2)
        root.addLayout(charts, 3)

        self.tabs = QTabWidget()
        self.table_model = RequestsModel()
        self.table = QTableView()
        self.table.setObjectName("recent")
        self.table.setModel(self.table_model)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setAlternatingRowColors(False)
        self.table.setShowGrid(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate((70, 110, 70, 80, 70, 80, 170, 70, 70, 80, 70, 70)):
            self.table.setColumnWidth(col, width)
        self.tabs.addTab(self.table, "Recent requests")

        self.history = QTableWidget(0, 7)
        self.history.setObjectName("history")
        self.history.setHorizontalHeaderLabels(["day", "provider", "model", "requests", "tokens", "cost",
                                                "avg latency"])
        self.history.verticalHeader().setVisible(False)
        self.history.setShowGrid(False)
        self.history.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        history_header = self.history.horizontalHeader()
        history_header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)  # the table uses the tab's width
        for col in range(7):
            item = self.history.horizontalHeaderItem(col)
            if item is not None:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter if col >= 3
                                      else Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        history_box = QWidget()
        hl = QVBoxLayout(history_box)
        hl.setContentsMargins(6, 6, 6, 6)
        row = QHBoxLayout()
        self.history_note = QLabel("Last 30 days, from the usage store (the same data as /v1/usage).")
        self.history_note.setObjectName("muted")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_history)
        row.addWidget(self.history_note, 1)
        row.addWidget(refresh)
        hl.addLayout(row)
        hl.addWidget(self.history)
        self.tabs.addTab(history_box, "History")
        self.audit_view: QWidget | None = None
        if audit_view is not None:
            self.add_audit_view(audit_view)
        self.tabs.currentChanged.connect(lambda i: self.refresh_history() if self.tabs.widget(i) is history_box else None)
        root.addWidget(self.tabs, 2)
        self.setCentralWidget(central)

        self.fresh_ms = int(os.environ.get("OMEN_DASHBOARD_INTERVAL_MS", "1000"))  # bench: a faster stress case
        self.timer = QTimer(self)  # runs only while there is something moving on screen (see _plan)
        self.timer.timeout.connect(self.redraw)

    # ---------------------------------------------------------------- live

    def mark_dirty(self) -> None:
        """New events: redraw now if on screen and no tick is due within a second."""
        self._dirty_table = True
        if self.on_screen() and not (self.timer.isActive() and self.timer.interval() <= self.fresh_ms):
            self.redraw()

    def on_screen(self) -> bool:
        return self.isVisible() and not self.isMinimized()

    def _plan(self) -> None:
        """Tick only while something on screen moves with time; otherwise no timer at all."""
        last = self.stats.last_time
        age = time.time() - last if last is not None else math.inf
        if not self.on_screen() or age >= self.stats.window:
            self.timer.stop()
            return
        interval = self.fresh_ms if age < 60 else 5000
        if not self.timer.isActive() or self.timer.interval() != interval:
            self.timer.start(interval)

    def add_audit_view(self, view: QWidget) -> None:
        """The Tool audit tab, once Glyph has a log (at start, or when Glyph is set up later)."""
        if self.audit_view is None:
            self.audit_view = view
            self.tabs.addTab(view, "Tool audit (Glyph)")

    def set_get_started(self, steps: list[Step]) -> None:
        """The first-run panel: what to do to get a first answer (hidden once one can come)."""
        if steps == self._steps:
            return
        self._steps = list(steps)
        while self.steps_layout.count():
            item = self.steps_layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        title = QLabel("Get started")
        title.setObjectName("gs-title")
        self.steps_layout.addWidget(title)
        for step in steps:
            row = QWidget()
            line = QHBoxLayout(row)
            line.setContentsMargins(0, 0, 0, 0)
            text = QLabel(step.text)
            text.setWordWrap(True)
            text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            line.addWidget(text, 1)
            if step.action and self.on_step is not None:
                button = QPushButton(step.button)
                button.setObjectName(f"step:{step.action}")
                button.clicked.connect(_step_slot(self.on_step, step.action))
                line.addWidget(button)
            self.steps_layout.addWidget(row)
        self.get_started.setVisible(bool(steps))

    def set_overall(self, overall: Overall, url: str, details: str = "") -> None:
        self.state_dot.setStyleSheet(f"color: {COLORS[overall.state].name()}; font-size: 18px;")
        self.headline.setText(overall.headline)
        self.endpoint.setText(f"{url}/v1" if url and overall.state != STOPPED else "")
        self.detail.setText("  ·  ".join(overall.detail))
        self.detail.setToolTip(plain_tip(details))  # the library's own words (untrusted), as plain text
        self.detail.setVisible(bool(overall.detail))

    def set_spend(self, today: float, month: float, limits: dict[str, dict[str, float]],
                  used: dict[str, tuple[float, float]]) -> None:
        self.spend_today, self.spend_month = today, month
        self.quota_limits, self.quota_used = limits, used

    def color(self, provider: str) -> str:
        return theme.provider_color(provider)

    def redraw(self, force: bool = False) -> None:
        """Charts, cards and table from the stats (on new data, only while on screen)."""
        if not force and not self.on_screen():
            return
        now = int(time.time())
        s = self.stats
        x = np.arange(now - s.window + 1, now + 1, dtype=np.float64)
        start = x[0]  # a fresh app shows the minutes it has, not ten empty ones
        if s.first_time is not None:
            start = max(x[0], min(s.first_time - 10, now - 120))
        shown = x >= start
        for chart, field in ((self.chart_ttft, "ttft"), (self.chart_latency, "lat")):
            series = {p: s.latency(p, field, now) for p in list(s.rings)}
            unit, divisor = latency_unit([v[shown] for v in series.values()])
            chart.set_unit(unit)
            for provider, values in series.items():
                chart.curve(provider, self.color(provider)).setData(x, values / divisor)
            chart.frame(start, x[-1], finite_max([v[shown] for v in series.values()]) / divisor)
        rate = s.rate(now) * 60
        failovers = s.failovers.series("count", now) * 60
        self.chart_rate.curve("requests/min", "#3b6fd8", fill=True).setData(x, rate)
        self.chart_rate.curve("failovers/min", "#d23b3b").setData(x, failovers)
        self.chart_rate.frame(start, x[-1], finite_max([rate[shown], failovers[shown]]))

        per_min = float(s.total.series("count", now)[-60:].sum())
        self.card_rate.set(f"{per_min:,.0f}", f"{s.events_seen:,} attempts since start")
        ttft = s.recent_mean("ttft", now)
        lat = s.recent_mean("lat", now)
        self.card_ttft.set("—" if ttft is None else f"{ttft:,.0f} ms",
                           "" if lat is None else f"total {lat:,.0f} ms (last minute)")
        today = self.spend_today + s.live_cost
        month = self.spend_month + s.live_cost
        self.card_today.set(money(today), *self._quota_note("daily_usd", 0))
        self.card_month.set(money(month), *self._quota_note("monthly_usd", 1))
        recent = float(s.failovers.series("count", now).sum())
        self.card_failovers.set(f"{s.failover_count:,}", f"{recent:,.0f} in the last 10 min")
        if self._dirty_table:
            self._dirty_table = False
            self.table_model.set_rows(list(s.recent))
        self.redraws += 1
        self._plan()

    def _quota_note(self, key: str, which: int) -> tuple[str, float | None]:
        """The tightest quota of this period: "of $5.00 (user owner)" and the fraction used."""
        best: tuple[float, str] | None = None
        for label, lim in self.quota_limits.items():
            cap = lim.get(key)
            if cap is None or math.isinf(cap):
                continue
            used = self.quota_used.get(label, (0.0, 0.0))[which]
            frac = used / cap if cap > 0 else 1.0
            if best is None or frac > best[0]:
                best = (frac, f"{money(used)} of {money(cap)} quota ({label})")
        if best is None:
            return "no quota set", None
        return best[1], best[0]

    # ---------------------------------------------------------------- history

    def refresh_history(self) -> None:
        if self.fetch_history is not None:
            self.history_note.setText("Loading…")
            self.fetch_history(self.show_history)

    def show_history(self, body: dict[str, Any]) -> None:
        rows = body.get("data", [])
        self.history.setRowCount(len(rows))
        for i, r in enumerate(reversed(rows)):  # newest day first
            lat = (r.get("latency_ms") or {}).get("avg")
            values = (r.get("day", ""), r.get("provider", ""), r.get("model", ""), f"{r.get('requests', 0):,}",
                      f"{r.get('total_tokens', 0):,}", money(float(r.get("cost_usd", 0.0))),
                      "" if lat is None else f"{lat:,.0f} ms")
            for j, v in enumerate(values):
                item = QTableWidgetItem(str(v))
                if j >= 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.history.setItem(i, j, item)
        total = body.get("total", {})
        self.history_note.setText(
            f"Last 30 days: {total.get('requests', 0):,} requests, {money(float(total.get('cost_usd', 0.0)))}"
            " (from the usage store, the same data as /v1/usage).")

    # ---------------------------------------------------------------- window

    def bring_to_front(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized | Qt.WindowState.WindowActive)
        self.raise_()
        self.activateWindow()
        self.redraw(force=True)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closing.emit()
        super().closeEvent(event)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.redraw(force=True)  # whatever came while hidden, once

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.WindowStateChange:
            if self.isMinimized():
                self.timer.stop()
            else:
                self.redraw(force=True)


def _step_slot(on_step: Callable[[str], None], action: str) -> Callable[[bool], None]:
    def run(_checked: bool = False) -> None:
        on_step(action)

    return run


def first_size() -> tuple[int, int]:
    """The first window fits the screen it opens on (a 1280x800 laptop included)."""
    screen = QGuiApplication.primaryScreen()
    if screen is None:
        return 1180, 740
    geo = screen.availableGeometry()
    return min(1180, geo.width() - 40), min(740, geo.height() - 60)


def bold(font: QFont) -> QFont:
    font.setBold(True)
    return font


def screen_center(widget: QWidget) -> None:
    screen = QGuiApplication.primaryScreen()
    if screen is not None:
        geo = screen.availableGeometry()
        widget.move(geo.center() - widget.rect().center())
