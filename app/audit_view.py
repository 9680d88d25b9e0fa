"""The tray app's audit view: Glyph's recent calls, filtered, and whether the chain verifies.

Reads the SQLite file directly through ``glyph.audit.AuditLog`` (the last few hundred
rows: cheap enough for the GUI thread). Hover a row for its (redacted) arguments and
detail. The filter box matches any column (client, server, tool, decision, outcome...);
the decision box narrows to allowed or denied calls.

The hash chain is verified on a worker thread, never the UI's (a full walk reads every
row: about 2 s per 100,000). The first verification and "Verify chain" walk it all; a
Refresh walks only the rows after the head verified last (after checking that row still
has its hash), so a large log costs a refresh what its new rows cost.
"""

from __future__ import annotations

import json
import threading

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from glyph.audit import AuditLog, VerifyReport
from glyph.display import one_line

from .rich_text import plain_tip

COLUMNS = ("id", "time (UTC)", "kind", "client", "server", "tool", "decision", "decided by", "outcome",
           "ms", "bytes")
DENIED = QColor("#b00020")


class AuditView(QWidget):
    verified = Signal(object)  # a VerifyReport, from the worker thread (queued to the UI's)

    def __init__(self, audit: AuditLog, limit: int = 500, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.audit = audit
        self.limit = limit
        self.report: VerifyReport | None = None
        self._head: tuple[int, str] | None = None  # the last head a verification reported intact
        self._running: threading.Thread | None = None
        self._again: bool | None = None  # a request that came while one ran (True: full)
        self.verified.connect(self._show_report)
        self.setWindowTitle("Glyph audit log")

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.status = QLabel("")
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # a verify report quotes rows
        self.status.setObjectName("verify-status")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.verify_button = QPushButton("Verify chain")
        self.verify_button.clicked.connect(lambda _c=False: self.verify(full=True))
        self.filter = QLineEdit()
        self.filter.setObjectName("audit-filter")
        self.filter.setPlaceholderText("Filter: tool, server, client, outcome…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.apply_filter)
        self.decision = QComboBox()
        self.decision.setObjectName("audit-decision")
        self.decision.addItems(["all decisions", "allow", "deny"])
        self.decision.currentIndexChanged.connect(self.apply_filter)

        buttons = QHBoxLayout()
        buttons.addWidget(self.filter, 2)
        buttons.addWidget(self.decision)
        buttons.addWidget(refresh)
        buttons.addWidget(self.verify_button)
        buttons.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        self.refresh()

    def refresh(self) -> None:
        rows = self.audit.rows(self.limit)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(reversed(rows)):  # newest first
            values = (row["id"], row["ts"][:19].replace("T", " "), row["kind"], row["client"], row["server"],
                      row["tool"], row["decision"], row["decided_by"], row["outcome"],
                      f"{row['duration_us'] / 1000:.1f}", row["result_bytes"])
            tip = json.dumps(json.loads(row["arguments"]), indent=2, ensure_ascii=False)
            if row["detail"]:
                tip += "\n\n" + row["detail"]
            for j, value in enumerate(values):
                item = QTableWidgetItem(one_line(str(value)))  # names and arguments are untrusted text
                item.setToolTip(plain_tip(tip))  # escaped: Qt reads a tooltip as HTML when it looks like it
                if row["decision"] == "deny":
                    item.setForeground(DENIED)
                self.table.setItem(i, j, item)
        self.apply_filter()
        self.verify(full=self._head is None)

    def apply_filter(self) -> None:
        """Hide the rows that do not match the filter text and the decision box."""
        needle = self.filter.text().strip().lower()
        wanted = self.decision.currentText()
        decision_col = COLUMNS.index("decision")
        for i in range(self.table.rowCount()):
            cells = [self.table.item(i, j) for j in range(self.table.columnCount())]
            texts = [c.text().lower() if c is not None else "" for c in cells]
            match = (not needle or any(needle in t for t in texts)) and (
                wanted == "all decisions" or texts[decision_col] == wanted)
            self.table.setRowHidden(i, not match)

    def visible_rows(self) -> int:
        return sum(not self.table.isRowHidden(i) for i in range(self.table.rowCount()))

    def verify(self, full: bool = True) -> None:
        """Verify the chain on a worker thread; the status line says "Verifying…" meanwhile."""
        if self._running is not None and self._running.is_alive():
            self._again = bool(self._again) or full
            return
        since = None if full else self._head
        self.status.setText("Verifying the chain…")
        self.status.setStyleSheet("")

        def work() -> None:
            try:
                report = self.audit.verify(since=since)
            except Exception as exc:  # a locked or vanished file: say so, never crash the UI
                report = VerifyReport(False, 0, problem=f"cannot read the log ({type(exc).__name__})")
            self.verified.emit(report)

        self._running = threading.Thread(target=work, name="audit-verify", daemon=True)
        self._running.start()

    def _show_report(self, report: VerifyReport) -> None:
        self.report = report
        if report.ok:
            self._head = (report.head_id, report.head_hash)
            self.status.setText(f"Chain intact: {report.count} entries (head {report.head_hash[:12]})")
            self.status.setStyleSheet("color: #1b5e20")
        else:
            self._head = None  # the next check walks it all again
            where = f"at row {report.bad_id}: " if report.bad_id is not None else ""
            self.status.setText(f"TAMPERED {where}{report.problem}" if report.bad_id is not None
                                else f"Cannot verify: {report.problem}")
            self.status.setStyleSheet("color: #b00020; font-weight: bold")
        again, self._again = self._again, None
        if again is not None:
            self.verify(full=again)
