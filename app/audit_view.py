"""The tray app's audit view: Glyph's recent calls, filtered, and whether the chain verifies.

Reads the SQLite file directly through ``glyph.audit.AuditLog`` (a few hundred rows; cheap
enough for the GUI thread). Hover a row for its (redacted) arguments and detail. The
filter box matches any column (client, server, tool, decision, outcome...); the decision
box narrows to allowed or denied calls. Every refresh verifies the hash chain and says so.
"""

from __future__ import annotations

import json

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
from glyph.display import one_line, visible

COLUMNS = ("id", "time (UTC)", "kind", "client", "server", "tool", "decision", "decided by", "outcome",
           "ms", "bytes")
DENIED = QColor("#b00020")


class AuditView(QWidget):
    def __init__(self, audit: AuditLog, limit: int = 500, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.audit = audit
        self.limit = limit
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
        self.status.setObjectName("verify-status")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.verify_button = QPushButton("Verify chain")
        self.verify_button.clicked.connect(self.verify)
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
                item.setToolTip(visible(tip))
                if row["decision"] == "deny":
                    item.setForeground(DENIED)
                self.table.setItem(i, j, item)
        self.apply_filter()
        self.verify()

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

    def verify(self) -> VerifyReport:
        report = self.audit.verify()
        if report.ok:
            self.status.setText(f"Chain intact: {report.count} entries (head {report.head_hash[:12]})")
            self.status.setStyleSheet("color: #1b5e20")
        else:
            self.status.setText(f"TAMPERED at row {report.bad_id}: {report.problem}")
            self.status.setStyleSheet("color: #b00020; font-weight: bold")
        return report
