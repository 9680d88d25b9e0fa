"""Creating a client token: one dialog (user, workspace, label), then the token, once, with Copy.

OMEN keeps only a token's hash, so this is the one moment the token can be read: the
dialog keeps it on screen (selectable, monospace) until the user closes it, and Copy puts
it on the clipboard. The creation itself (a file write) runs off the UI thread: the caller
passes ``create(user, workspace, label, done)`` and calls ``done(token, error)`` back on
the UI thread.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from omen_local.tokens import reserved_user

from .dialog_frame import fixed_dialog

Done = Callable[[str | None, BaseException | None], None]
Create = Callable[[str, str, str, Done], None]
NOTE_STYLE, BAD_STYLE = "color: #6b7280;", "color: #b00020;"


def fit(button: QPushButton) -> QPushButton:
    """A button as wide as its text, never stretched by its layout."""
    button.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
    return button


class TokenDialog(QDialog):
    def __init__(self, create: Create, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._create = create
        self.token = ""
        self.setObjectName("token-dialog")
        self.setWindowTitle("Create a client token")
        layout = QVBoxLayout(self)
        self.pages = QStackedWidget()
        layout.addWidget(self.pages)

        ask = QWidget()
        form = QFormLayout(ask)
        self.user = QLineEdit()
        self.user.setObjectName("token-user")
        self.user.setPlaceholderText("e.g. alice")
        self.workspace = QLineEdit()
        self.workspace.setObjectName("token-workspace")
        self.workspace.setPlaceholderText("optional, e.g. acme")
        self.label = QLineEdit()
        self.label.setObjectName("token-label")
        self.label.setPlaceholderText("optional, e.g. Cursor on the laptop")
        intro = QLabel("A client token names a user (and a default workspace) for usage and quotas.")
        intro.setWordWrap(True)
        form.addRow(intro)
        form.addRow("User", self.user)
        form.addRow("Workspace", self.workspace)
        form.addRow("Label", self.label)
        self.error = QLabel("")
        self.error.setObjectName("token-error")
        self.error.setStyleSheet(BAD_STYLE)
        self.error.setWordWrap(True)
        form.addRow(self.error)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        cancel = fit(QPushButton("Cancel"))
        cancel.clicked.connect(self.reject)
        self.create_button = fit(QPushButton("Create token"))
        self.create_button.setObjectName("token-create")
        self.create_button.setDefault(True)
        self.create_button.setEnabled(False)
        self.create_button.clicked.connect(self.submit)
        buttons.addWidget(cancel)
        buttons.addWidget(self.create_button)
        form.addRow(buttons)
        self.user.textChanged.connect(self._check)
        self.pages.addWidget(ask)

        shown = QWidget()
        sl = QVBoxLayout(shown)
        self.shown_for = QLabel("")
        self.shown_for.setObjectName("token-for")
        self.shown_for.setTextFormat(Qt.TextFormat.PlainText)
        self.shown_for.setWordWrap(True)
        sl.addWidget(self.shown_for)
        row = QHBoxLayout()
        self.token_field = QLineEdit()
        self.token_field.setObjectName("token-value")
        self.token_field.setReadOnly(True)
        self.token_field.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.token_field.setMinimumWidth(440)
        self.copy_button = fit(QPushButton("Copy"))
        self.copy_button.setObjectName("token-copy")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.token_field, 1)
        row.addWidget(self.copy_button)
        sl.addLayout(row)
        once = QLabel("This is the only time the token is shown: OMEN keeps only its hash. "
                      "Copy it into the client now; if it is lost, revoke it and create another.")
        once.setWordWrap(True)
        once.setStyleSheet(NOTE_STYLE)
        sl.addWidget(once)
        self.copied = QLabel("")
        self.copied.setObjectName("token-copied")
        sl.addWidget(self.copied)
        close_row = QHBoxLayout()
        close_row.addStretch(1)
        close = fit(QPushButton("Done"))
        close.setObjectName("token-done")
        close.clicked.connect(self.accept)
        close_row.addWidget(close)
        sl.addLayout(close_row)
        self.pages.addWidget(shown)
        fixed_dialog(self)  # asks for a title and a close button only (app.dialog_frame)

    def _check(self) -> None:
        user = self.user.text().strip()
        if user and reserved_user(user):
            self.error.setText(f'"{user}" is reserved (owner is you, local the clients on this machine).')
        else:
            self.error.setText("")
        self.create_button.setEnabled(bool(user) and not reserved_user(user))

    def submit(self) -> None:
        user = self.user.text().strip()
        if not user or reserved_user(user):
            return
        self.create_button.setEnabled(False)
        self.error.setText("")
        self._create(user, self.workspace.text().strip(), self.label.text().strip(), self._created)

    def _created(self, token: str | None, exc: BaseException | None) -> None:
        if token is None:
            self.error.setText(f"Not created: {exc}")
            self.create_button.setEnabled(True)
            return
        self.token = token
        self.token_field.setText(token)
        self.token_field.setCursorPosition(0)
        workspace = self.workspace.text().strip()
        self.shown_for.setText(f"The token for {self.user.text().strip()}"
                               + (f" (workspace {workspace})" if workspace else "") + ":")
        self.pages.setCurrentIndex(1)
        self.copy_button.setFocus()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.token)
        self.copied.setText("Copied to the clipboard.")
