"""The tray app's Qt consent dialog and prompter, driven with pytest-qt (offscreen)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

from app.audit_view import AuditView
from app.consent_dialog import ConsentDialog, QtPrompter
from glyph.audit import AuditEntry, AuditLog
from glyph.consent import ConsentRequest, Decision, DefinitionChange, Scope, ask_fail_closed
from glyph.db import Store
from tests.waiting import DEADLINE_S


def request(**over: object) -> ConsentRequest:
    base: dict[str, object] = {
        "client": "code/1.96", "server": "rune", "tool": "edit_file", "exposed": "rune__edit_file",
        "arguments": {"path": "src/app.py", "old_string": "x = 1\n", "new_string": "x = 2\n",
                      "content": "line one\nline two\n"},
        "reason": "no rule allows it", "paths": ("/work/proj/src/app.py",), "destructive": True,
    }
    base.update(over)
    return ConsentRequest(**base)  # type: ignore[arg-type]


def labels(dialog: ConsentDialog) -> str:
    return " ".join(label.text() for label in dialog.findChildren(QLabel))


def test_dialog_shows_server_tool_arguments_and_diff(qtbot: QtBot) -> None:
    dialog = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(dialog)
    text = labels(dialog)
    assert "code/1.96" in text and "edit_file" in text and "rune" in text and "no rule allows it" in text
    details = dialog.details.toPlainText()
    assert "/work/proj/src/app.py" in details
    assert "content: |\n    line one\n    line two" in details  # readable, not escaped
    assert "-x = 1\n+x = 2" in details
    assert dialog.details.isReadOnly()
    assert dialog.details.font().fixedPitch() or dialog.details.font().styleHint() is not None
    assert [dialog.button(s).text() for s in (Scope.DENY, Scope.ONCE)] == ["Deny", "Allow once"]
    assert dialog.remember.text() == "Remember…"
    assert [a.text() for a in dialog.remember_menu.actions() if not a.isSeparator()] == [
        "Allow edit_file on any file until OMEN quits", "Always allow edit_file on any file",
        "Never allow edit_file (always deny)"]
    assert dialog.button(Scope.DENY).isDefault()  # Enter denies


def test_dialog_flags_a_changed_definition(qtbot: QtBot) -> None:
    changed = DefinitionChange({"description": "Edit."}, {"description": "Edit. And upload."})
    dialog = ConsentDialog(request(changed=changed, reason="the tool's definition changed"), timeout_s=None)
    qtbot.addWidget(dialog)
    assert "definition changed since it was approved" in labels(dialog)
    assert '+  "description": "Edit. And upload."' in dialog.details.toPlainText()


def test_dialog_says_what_the_call_does_in_plain_words(qtbot: QtBot) -> None:
    """The real edit_file's call shape (rune's schema: path + edits[old_text/new_text])."""
    call = request(arguments={"path": "src/invoice.py",
                              "edits": [{"old_text": "TAX = 0.19\n", "new_text": "TAX = 0.21\n"}]},
                   paths=("/work/proj/src/invoice.py",))
    dialog = ConsentDialog(call, timeout_s=None)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.headline.text() == "code/1.96 wants to change 1 line in src/invoice.py"
    assert "-TAX = 0.19\n+TAX = 0.21" in dialog.details.toPlainText()  # the coloured diff stays
    # The rule language is one click away, not in the way.
    assert not dialog.why.isVisible() and "no rule allows it" in dialog.why.text()
    qtbot.mouseClick(dialog.why_toggle, Qt.MouseButton.LeftButton)
    assert dialog.why.isVisible() and "destructive" in dialog.why.text()
    flags = dialog.windowFlags()
    assert not flags & Qt.WindowType.WindowMinimizeButtonHint and not flags & Qt.WindowType.WindowMaximizeButtonHint
    assert flags & Qt.WindowType.WindowCloseButtonHint


def test_untrusted_text_is_never_rich_text(qtbot: QtBot) -> None:
    hostile = request(client="<img src=x><b>Trusted IDE</b>", tool="<a href='x'>edit</a>",
                      reason="<span style='font-size:0'>hidden</span>", description="<h1>big</h1>\u202e")
    dialog = ConsentDialog(hostile, timeout_s=None)
    qtbot.addWidget(dialog)
    for label in dialog.findChildren(QLabel):
        assert label.textFormat() == Qt.TextFormat.PlainText, label.objectName()
    assert "<img src=x><b>Trusted IDE</b>" in dialog.headline.text()
    assert "⟨U+202E⟩" in dialog.why.text()


@pytest.mark.parametrize("scope", [Scope.ONCE, Scope.DENY])
def test_each_button_decides(qtbot: QtBot, scope: Scope) -> None:
    dialog = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(dialog)
    dialog.show()
    with qtbot.waitSignal(dialog.decided, timeout=int(DEADLINE_S * 1000)) as signal:
        qtbot.mouseClick(dialog.button(scope), Qt.MouseButton.LeftButton)
    assert signal.args == [Decision(scope, "user:qt")]
    assert dialog.decision == Decision(scope, "user:qt")
    assert not dialog.isVisible()


@pytest.mark.parametrize("scope", [Scope.SESSION, Scope.ALWAYS, Scope.DENY_ALWAYS])
def test_each_remembered_answer_decides(qtbot: QtBot, scope: Scope) -> None:
    dialog = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(dialog)
    dialog.show()
    with qtbot.waitSignal(dialog.decided, timeout=2000) as signal:
        dialog.action(scope).trigger()
    assert signal.args == [Decision(scope, "user:qt")]
    assert not dialog.isVisible()


def test_escape_close_and_timeout_are_denials(qtbot: QtBot) -> None:
    escaped = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(escaped)
    escaped.show()
    qtbot.keyClick(escaped, Qt.Key.Key_Escape)
    assert escaped.decision == Decision(Scope.DENY, "fail-closed:dismissed")

    closed = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(closed)
    closed.show()
    closed.close()
    assert closed.decision == Decision(Scope.DENY, "fail-closed:dismissed")

    timed = ConsentDialog(request(), timeout_s=0.3)
    qtbot.addWidget(timed)
    timed.show()
    assert "Denied automatically in 1 s" in timed.countdown.text()
    qtbot.waitUntil(lambda: timed.decision is not None, timeout=int(DEADLINE_S * 1000))
    assert timed.decision == Decision(Scope.DENY, "fail-closed:timeout")

    # the first answer wins: later clicks change nothing
    timed.action(Scope.ALWAYS).trigger()
    assert timed.decision.scope is Scope.DENY


async def pump_until(qapp: QApplication, done: Callable[[], bool], limit_s: float = DEADLINE_S) -> None:
    """Run Qt events while the asyncio test loop runs (the tray app uses qasync for this)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not done() and loop.time() < end:
        qapp.processEvents()
        await asyncio.sleep(0.01)


async def test_qt_prompter_round_trip(qtbot: QtBot, qapp: QApplication) -> None:
    prompter = QtPrompter(timeout_s=None)
    task = asyncio.ensure_future(prompter.ask(request()))
    await pump_until(qapp, lambda: prompter.current is not None)
    dialog = prompter.current
    assert dialog is not None and dialog.isVisible()
    dialog.action(Scope.SESSION).trigger()
    await pump_until(qapp, task.done)
    assert task.result() == Decision(Scope.SESSION, "user:qt")
    assert prompter.dialogs == {}


async def test_qt_prompter_is_closed_and_denied_when_glyph_gives_up(qapp: QApplication) -> None:
    prompter = QtPrompter(timeout_s=None)
    task = asyncio.ensure_future(ask_fail_closed(prompter, request(), timeout_s=0.2))
    await pump_until(qapp, task.done)
    assert task.result() == Decision(Scope.DENY, "fail-closed:timeout")
    await pump_until(qapp, lambda: not prompter.dialogs)
    assert prompter.dialogs == {}  # the dialog did not outlive the question


async def test_qt_prompter_dismissed_dialog_denies(qapp: QApplication) -> None:
    prompter = QtPrompter(timeout_s=None)
    task = asyncio.ensure_future(prompter.ask(request()))
    await pump_until(qapp, lambda: prompter.current is not None)
    assert prompter.current is not None
    prompter.current.reject()
    await pump_until(qapp, task.done)
    assert task.result() == Decision(Scope.DENY, "fail-closed:dismissed")


def test_audit_view_lists_and_verifies(qtbot: QtBot, tmp_path: Path) -> None:
    with Store(tmp_path / "g.db") as store:
        log = AuditLog(store)
        log.append(AuditEntry(client="ed", server="fake", tool="read", decision="allow", outcome="ok"))
        log.append(AuditEntry(client="ed", server="fake", tool="write", arguments={"token": "s3cret"},
                              decision="deny", outcome="denied"))
        view = AuditView(log)
        qtbot.addWidget(view)
        assert view.table.rowCount() == 2
        assert view.table.item(0, 5).text() == "write"  # newest first
        assert "[REDACTED]" in view.table.item(0, 5).toolTip()
        qtbot.waitUntil(lambda: "Chain intact: 2 entries" in view.status.text(), timeout=30_000)  # verified off the UI thread
        assert view.report is not None and view.report.ok
        store.db.execute_sql("DROP TRIGGER audit_no_update")  # as an attacker would
        store.Audit.update(outcome="ok").where(store.Audit.id == 2).execute()
        view.verify(full=True)
        qtbot.waitUntil(lambda: "TAMPERED at row 2" in view.status.text(), timeout=30_000)
        assert view.report is not None and not view.report.ok


def test_pyside6_survives_many_signal_emits() -> None:
    """PySide6 6.12.0 on Python 3.11 aborts after ~1000 emits; the pinned version must not."""
    code = textwrap.dedent("""
        from PySide6.QtCore import QCoreApplication, QObject, Signal

        class Emitter(QObject):
            flag = Signal(bool)
            thing = Signal(object)

        app = QCoreApplication([])
        e = Emitter()
        seen = []
        e.flag.connect(seen.append)
        e.thing.connect(seen.append)
        for i in range(5000):
            e.flag.emit(i % 2 == 0)
            e.thing.emit(i)
        print(len(seen))
    """)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "10000"


def test_dialog_signals_survive_many_emits(qtbot: QtBot) -> None:
    """The same, in this process, through the dialog's own signal."""
    dialog = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(dialog)
    seen: list[object] = []
    dialog.decided.connect(seen.append)
    for _ in range(5000):
        dialog.decided.emit(True)
    assert len(seen) == 5000


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the pin applies to Python 3.11 only")
def test_pyside6_pin_holds() -> None:
    import PySide6

    major, minor = (int(x) for x in PySide6.__version__.split(".")[:2])
    assert (major, minor) < (6, 12), PySide6.__version__


def test_the_dialog_has_a_fixed_size_that_fits_the_screen_whatever_the_names(qtbot: QtBot) -> None:
    """Fixed (a window manager then offers no maximise, app/dialog_frame.py), grown only by the
    "Why am I asked?" text; a tool name with no space to wrap at cannot push the buttons off screen."""
    long = "x" * 400
    for dialog in (ConsentDialog(request(), timeout_s=None),
                   ConsentDialog(request(tool=long, exposed=f"rune__{long}", arguments={"path": "y" * 900}),
                                 timeout_s=None)):
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        screen = dialog.screen().availableGeometry()
        assert dialog.minimumSize() == dialog.maximumSize() == dialog.size(), dialog.size()
        assert dialog.width() <= screen.width() and dialog.height() <= screen.height(), (dialog.size(), screen)
        before = dialog.height()
        dialog.why_toggle.setChecked(True)
        qtbot.waitUntil(lambda d=dialog, h=before: d.height() > h, timeout=20_000)  # type: ignore[misc]
        assert dialog.minimumSize() == dialog.maximumSize() == dialog.size()


def test_remembered_answers_say_they_cover_the_tool_on_any_file(qtbot: QtBot) -> None:
    """Review of issue 20, item 3: "Always allow" read like this call; Glyph keeps it for the tool
    (server + tool: any file, any client; tests/glyph/test_gateway.py shows it)."""
    dialog = ConsentDialog(request(), timeout_s=None)
    qtbot.addWidget(dialog)
    texts = {scope: dialog.action(scope).text() for scope in ConsentDialog.REMEMBERED}
    assert texts == {Scope.SESSION: "Allow edit_file on any file until OMEN quits",
                     Scope.ALWAYS: "Always allow edit_file on any file",
                     Scope.DENY_ALWAYS: "Never allow edit_file (always deny)"}
    assert dialog.remember_menu.toolTipsVisible()
    always = dialog.action(Scope.ALWAYS).toolTip()
    assert "every call of edit_file from the rune server" in always and "any client" in always
    assert "glyph decisions --forget rune__edit_file" in always
    no_path = ConsentDialog(request(tool="ping&pong", arguments={"n": 1}, paths=()), timeout_s=None)
    qtbot.addWidget(no_path)
    assert no_path.action(Scope.ALWAYS).text() == "Always allow ping&&pong with any arguments"  # && shows one &
