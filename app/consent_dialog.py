"""The tray app's consent prompt: a Qt dialog, and the Glyph prompter that shows it.

The dialog says in plain words what the call would do and who asks, then shows the full
arguments in a monospace read-only view where file contents and patches are blocks and
old/new text pairs are unified diffs (``glyph.render``); why Glyph asks is one click away.
Allow once and Deny are buttons, the remembered answers a menu. It fails closed: closing it, pressing Escape, or letting the countdown run out is a denial.

:class:`QtPrompter` implements ``glyph.consent.Prompter``. It lives in the GUI thread;
``ask`` may be awaited on the GUI thread's loop (qasync) or from Glyph running in another
thread: the dialog is always created on the GUI thread (a queued signal) and the answer is
handed back to the asking loop thread-safely.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QColor,
    QFontDatabase,
    QGuiApplication,
    QPalette,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from glyph.consent import ConsentRequest, Decision, Scope
from glyph.display import one_line
from glyph.render import render_arguments

from . import consent_words as words
from .dialog_frame import fixed_dialog


def _plain(text: str, name: str) -> QLabel:
    """A label that shows ``text`` as it is: untrusted text is never read as rich text."""
    label = QLabel(text)
    label.setObjectName(name)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _format(color: str) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(color))
    return fmt


class DiffHighlighter(QSyntaxHighlighter):
    """Colours +/-/@@ lines, only inside the diff sections ``glyph.render`` writes."""

    ADDED, REMOVED, HUNK = _format("#1b5e20"), _format("#b00020"), _format("#6a1b9a")

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)

    def highlightBlock(self, text: str) -> None:
        in_diff = self.previousBlockState() == 1
        if text == "Diff:" or text.startswith("TOOL DEFINITION CHANGED"):
            in_diff = True
        elif not text:
            in_diff = False
        elif in_diff and not text.startswith(("+++", "---")):
            fmt = {"+": self.ADDED, "-": self.REMOVED, "@": self.HUNK}.get(text[0])
            if fmt is not None:
                self.setFormat(0, len(text), fmt)
        self.setCurrentBlockState(1 if in_diff else 0)


class ConsentDialog(QDialog):
    """Allow or deny one tool call. ``decided`` fires exactly once, with the Decision.

    Plain words first ("Cursor wants to change 1 line in src/app.py", ``app.consent_words``),
    the call in full below (the coloured diff), Glyph's rule language under "Why am I asked?".
    Two primary answers, Allow once and Deny (the default: Enter denies); the remembered
    answers (this session, always, never) sit in the "Remember…" menu. Every text that came
    from a client, a model or a server is shown as plain text (never as rich text).
    """

    decided = Signal(object)

    REMEMBERED = (Scope.SESSION, Scope.ALWAYS, Scope.DENY_ALWAYS)  # labelled by words.remember_label

    def __init__(self, request: ConsentRequest, timeout_s: float | None = 120.0,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.request = request
        self._decision: Decision | None = None
        self._deadline = time.monotonic() + timeout_s if timeout_s else None
        self.setWindowTitle(f"Allow {one_line(request.tool)}? (Glyph)")
        self.setObjectName("glyph-consent")

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        self.headline = _plain(words.headline(request), "headline")
        font = self.headline.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.headline.setFont(font)
        layout.addWidget(self.headline)
        sub = _plain(f"Tool {one_line(request.tool)} from the {one_line(request.server)} server"
                     + (" · it can change or delete data" if request.destructive else ""), "subtitle")
        sub.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(sub)

        if request.changed is not None:
            warning = _plain("This tool's definition changed since it was approved. Review the difference below.",
                             "changed")
            warning.setStyleSheet("color: #b00020; font-weight: bold")
            layout.addWidget(warning)

        self.details = QPlainTextEdit(render_arguments(request))
        self.details.setObjectName("arguments")
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._highlighter = DiffHighlighter(self.details.document())
        layout.addWidget(self.details, 1)

        self.why_toggle = QToolButton()
        self.why_toggle.setObjectName("why")
        self.why_toggle.setText("Why am I asked?")
        self.why_toggle.setCheckable(True)
        self.why_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.why_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.why_toggle.setAutoRaise(True)
        self.why_toggle.toggled.connect(self._show_why)
        layout.addWidget(self.why_toggle)
        self.why = _plain(words.why(request), "why-text")
        self.why.setContentsMargins(18, 0, 0, 0)
        self.why.setVisible(False)
        layout.addWidget(self.why)

        row = QHBoxLayout()
        self.remember = QPushButton("Remember…")
        self.remember.setObjectName("remember")
        self.remember.setAutoDefault(False)
        self.remember_menu = QMenu(self.remember)
        self.remember_menu.setObjectName("remember-menu")
        self._actions: dict[Scope, QAction] = {}
        for scope in self.REMEMBERED:
            # Glyph remembers per tool, not per file: the label names the tool and "any file";
            # a "&" in a server's tool name is shown, not read as a shortcut marker.
            act = self.remember_menu.addAction(words.remember_label(request, scope).replace("&", "&&"))
            act.setToolTip(words.remember_tip(request, scope))
            act.setObjectName(f"scope-{scope.value}")
            act.triggered.connect(self._chooser(scope))
            self._actions[scope] = act
        self.remember_menu.insertSeparator(self._actions[Scope.DENY_ALWAYS])
        self.remember_menu.setToolTipsVisible(True)
        self.remember.setMenu(self.remember_menu)
        row.addWidget(self.remember)
        self.countdown = QLabel("")
        self.countdown.setObjectName("countdown")
        self.countdown.setTextFormat(Qt.TextFormat.PlainText)
        row.addWidget(self.countdown, 1, Qt.AlignmentFlag.AlignCenter)
        self._buttons: dict[Scope, QPushButton] = {}
        for scope in (Scope.DENY, Scope.ONCE):  # the affirmative last (right), as platform dialogs do
            button = QPushButton(scope.label)
            button.setObjectName(f"scope-{scope.value}")
            button.setAutoDefault(False)
            button.clicked.connect(self._chooser(scope))
            row.addWidget(button)
            self._buttons[scope] = button
        layout.addLayout(row)
        deny = self._buttons[Scope.DENY]
        deny.setDefault(True)  # Enter is the safe answer
        deny.setFocus()

        self._fit_to_call()
        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._tick)
        if self._deadline is not None:
            self._timer.start()
            self._tick()

    def _fit_to_call(self) -> None:
        """A fixed size fitted to the call: as wide as its longest line and as tall as its lines
        (6 to 26 lines, within 90% of the screen), so no empty box under a one-line edit; the
        view scrolls beyond that. Fixed, like the platforms' permission prompts: a window
        manager offers no maximise for a window it cannot resize (openbox offers it otherwise,
        whatever the hints say: ``app.dialog_frame``). It grows when "Why am I asked?" opens."""
        metrics = self.details.fontMetrics()
        document = self.details.document()
        pad = int(2 * document.documentMargin()) + 2 * self.details.frameWidth() + 4
        screen = (self.screen() or QGuiApplication.primaryScreen()).availableGeometry()
        widest = max((metrics.horizontalAdvance(line) for line in self.details.toPlainText().splitlines()), default=0)
        bar = self.details.verticalScrollBar().sizeHint().width()
        width = min(max(widest + pad + bar, 696), int(screen.width() * 0.9) - 24)
        lines = min(max(self.details.blockCount(), 6), 26)
        height = min(metrics.lineSpacing() * lines + pad, int(screen.height() * 0.9) - 260)
        self.details.setFixedSize(width, max(height, 120))
        for label in (self.headline, self.why, *self.findChildren(QLabel, "subtitle"), *self.findChildren(QLabel, "changed")):
            # The call's width bounds the words above and below it: a 400-character tool name
            # with no space to wrap at must not make the dialog wider than the screen.
            label.setMaximumWidth(width)
        fixed_dialog(self)  # asks for a title and a close button only (closing denies)

    @property
    def decision(self) -> Decision | None:
        return self._decision

    def button(self, scope: Scope) -> QPushButton:
        """The button for Allow once or Deny (the other answers are in the Remember… menu)."""
        return self._buttons[scope]

    def action(self, scope: Scope) -> QAction:
        """The Remember… menu's entry for session, always or never."""
        return self._actions[scope]

    def _show_why(self, shown: bool) -> None:
        self.why.setVisible(shown)
        self.why_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _chooser(self, scope: Scope) -> Callable[[], None]:
        return lambda: self.finish(Decision(scope, "user:qt"))

    def _tick(self) -> None:
        if self._deadline is None:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.finish(Decision(Scope.DENY, "fail-closed:timeout"))
        else:
            self.countdown.setText(f"Denied automatically in {int(left + 0.999)} s")

    def finish(self, decision: Decision) -> None:
        """Record the answer (the first one wins) and close."""
        if self._decision is not None:
            return
        self._decision = decision
        self._timer.stop()
        self.decided.emit(decision)
        self.done(QDialog.DialogCode.Accepted if decision.allows else QDialog.DialogCode.Rejected)

    def reject(self) -> None:  # Escape, or the window's close button
        self.finish(Decision(Scope.DENY, "fail-closed:dismissed"))  # closes the dialog

    def closeEvent(self, event: QCloseEvent) -> None:
        self.finish(Decision(Scope.DENY, "fail-closed:dismissed"))
        super().closeEvent(event)


class QtPrompter(QObject):
    """Glyph's prompter for the tray app: one ConsentDialog per question."""

    name = "qt"
    _show = Signal(object)
    _cancel = Signal(str)

    def __init__(self, timeout_s: float | None = 120.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.timeout_s = timeout_s
        self.dialogs: dict[str, ConsentDialog] = {}
        self._show.connect(self._on_show)
        self._cancel.connect(self._on_cancel)

    @property
    def current(self) -> ConsentDialog | None:
        """The newest open dialog (for tests and the tray icon's "pending" badge)."""
        return next(reversed(self.dialogs.values()), None)

    async def ask(self, request: ConsentRequest) -> Decision:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Decision] = loop.create_future()

        def resolve(decision: Decision) -> None:
            if not answer.done():
                answer.set_result(decision)

        def deliver(decision: object) -> None:
            if isinstance(decision, Decision):
                loop.call_soon_threadsafe(resolve, decision)

        self._show.emit((request, deliver))
        try:
            return await answer
        finally:
            self._cancel.emit(request.id)  # Glyph gave up (timeout, shutdown): close the dialog

    def _on_show(self, payload: object) -> None:
        request, deliver = cast("tuple[ConsentRequest, Callable[[object], None]]", payload)
        dialog = ConsentDialog(request, self.timeout_s)
        dialog.decided.connect(deliver)
        dialog.finished.connect(lambda _result: self._forget(request.id))
        self.dialogs[request.id] = dialog
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()

    def _on_cancel(self, request_id: str) -> None:
        dialog = self.dialogs.get(request_id)
        if dialog is not None and dialog.decision is None:
            dialog.finish(Decision(Scope.DENY, "fail-closed:cancelled"))
        self._forget(request_id)

    def _forget(self, request_id: str) -> None:
        dialog = self.dialogs.pop(request_id, None)
        if dialog is not None:
            dialog.deleteLater()
