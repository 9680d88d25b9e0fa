"""The tray app's audit view: Glyph's recent calls, and a button that verifies the chain.

Reads the SQLite file directly through ``glyph.audit.AuditLog`` (a few hundred rows; cheap
enough for the GUI thread). Hover a row for its (redacted) arguments and detail.
"""

from __future__ import annotations

import json

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from glyph.audit import AuditLog, VerifyReport

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
        self.status = QLabel("")
        self.status.setObjectName("verify-status")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.verify_button = QPushButton("Verify chain")
        self.verify_button.clicked.connect(self.verify)

        buttons = QHBoxLayout()
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
                item = QTableWidgetItem(str(value))
                item.setToolTip(tip)
                if row["decision"] == "deny":
                    item.setForeground(DENIED)
                self.table.setItem(i, j, item)

    def verify(self) -> VerifyReport:
        report = self.audit.verify()
        if report.ok:
            self.status.setText(f"Chain intact: {report.count} entries (head {report.head_hash[:12]})")
            self.status.setStyleSheet("color: #1b5e20")
        else:
            self.status.setText(f"TAMPERED at row {report.bad_id}: {report.problem}")
            self.status.setStyleSheet("color: #b00020; font-weight: bold")
        return report
