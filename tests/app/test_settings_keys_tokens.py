"""Settings: deleting a key from the keyring, a token in one dialog, and saving writes only changes.

The keyring is keyrings.alt's file backend (a real keyring implementation, private to the
test); the app is the real OmenApp with OMEN serving on its router thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QPushButton, QSizePolicy
from pytestqt.qtbot import QtBot

from app.settings import SettingsDialog, token_row
from omen_local.config import load_config
from omen_local.secrets import SERVICE
from omen_local.tokens import ENDPOINT_LABEL
from tests.app.conftest import Running, Upstreams, make_config, start_app

keyrings_alt = pytest.importorskip("keyrings.alt.file")


def test_a_plaintext_file_keyring_is_not_one(tmp_path: Path) -> None:
    from app import keys

    before = keyring.get_keyring()
    keyring.set_keyring(keyrings_alt.PlaintextKeyring())
    try:
        assert keys.backend().ok is False  # Settings say there is no OS keyring
        from omen_local.secrets import SecretStore

        store = SecretStore(tmp_path, use_keyring=True)
        store.set("x", "y")  # OMEN keeps its secrets in its own 0600 file, not a plaintext "keyring"
        assert "no OS keyring" in store.backend and (tmp_path / "secrets.json").exists()
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def alt_keyring(tmp_path: Path) -> Iterator[None]:
    before = keyring.get_keyring()
    ring = keyrings_alt.PlaintextKeyring()
    # Standing in for the OS keyring: its priority raised on this instance only (a subclass would
    # join keyring's backend registry for the whole session). The app refuses a plaintext file
    # keyring at its own priority: test_a_plaintext_file_keyring_is_not_one.
    ring.priority = 1  # type: ignore[misc]
    ring.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")  # type: ignore[misc]
    keyring.set_keyring(ring)
    try:
        yield
    finally:
        keyring.set_keyring(before)


def settings(running: Running) -> SettingsDialog:
    running.app.open_settings()
    dialog = running.app.settings
    assert dialog is not None
    return dialog


def test_a_key_is_deleted_from_the_keyring_only_after_a_yes(alt_keyring: None, running: Running) -> None:
    keyring.set_password(SERVICE, "openai", "sk-test-0000000000001234")
    dialog = settings(running)
    row = dialog.key_rows["openai"]
    running.wait(lambda: row["stored"].text() == "••••••••1234" and row["delete"].isEnabled())
    assert not dialog.key_rows["anthropic"]["delete"].isEnabled()  # nothing stored: nothing to delete

    dialog.confirm_delete_key = lambda name: False  # type: ignore[method-assign]
    running.qtbot.mouseClick(row["delete"], Qt.MouseButton.LeftButton)
    assert row["result"].text() == "Kept." and keyring.get_password(SERVICE, "openai") == "sk-test-0000000000001234"

    dialog.confirm_delete_key = lambda name: True  # type: ignore[method-assign]
    running.qtbot.mouseClick(row["delete"], Qt.MouseButton.LeftButton)
    running.wait(lambda: dialog.status.text() == "key for openai deleted: saved and applied.")
    assert keyring.get_password(SERVICE, "openai") is None
    # the reload rebuilt the tab (the row above is gone): what it shows once it has read the keyring
    running.wait(lambda: dialog.key_rows["openai"]["stored"].text() == "not set")
    assert not dialog.key_rows["openai"]["delete"].isEnabled()


def test_a_key_that_survives_delete_is_not_called_deleted(alt_keyring: None, running: Running) -> None:
    """Review of issue 20, item 6: the copy read back after a delete is reported and shown."""
    from keyring.errors import PasswordDeleteError

    keyring.set_password(SERVICE, "openai", "sk-still-here-000000009876")

    def refuse(service: str, username: str) -> None:  # a keychain that refuses (locked, read-only)
        raise PasswordDeleteError("the collection is locked")

    keyring.get_keyring().delete_password = refuse  # type: ignore[method-assign]  # on this instance only
    dialog = settings(running)
    row = dialog.key_rows["openai"]
    running.wait(lambda: row["stored"].text() == "••••••••9876" and row["delete"].isEnabled())
    dialog.confirm_delete_key = lambda name: True  # type: ignore[method-assign]
    running.qtbot.mouseClick(row["delete"], Qt.MouseButton.LeftButton)
    running.wait(lambda: row["result"].text().startswith("Not deleted: a copy of the key is still in file PlaintextKeyring"))
    assert "the collection is locked" in row["result"].text()
    assert "keyring del omen-local openai" in row["result"].text() and "9876" not in row["result"].text()
    assert row["stored"].text() == "••••••••9876"


def test_saving_a_provider_keeps_the_model_fields_settings_does_not_show(
        qtbot: QtBot, tmp_path: Path, upstreams: Upstreams) -> None:
    """Review of issue 20, item 5: edit one cell, save: cached_input, cache_write, reasoning and
    the comments in the models list are still in the file."""
    config = make_config(tmp_path, upstreams)
    text = config.read_text(encoding="utf-8").replace('key = ["keyring:openai"]\n', 'key = ["keyring:openai"]\n'
        "models = [\n"
        "  # priced by hand\n"
        '  { name = "gpt-4o-mini", context_window = 128000, input = 0.15, output = 0.6, cached_input = 0.075, '
        "cache_write = 0.3 },\n"
        '  { name = "o3", input = 2.0, output = 8.0, reasoning = true },  # the thinker\n'
        "]\n", 1)
    config.write_text(text, encoding="utf-8")
    r = start_app(qtbot, config)
    try:
        dialog = settings(r)
        dialog.provider_list.setCurrentRow(1)  # openai
        assert dialog.p_models.item(0, 0).text() == "gpt-4o-mini"
        dialog.p_models.item(0, 2).setText("0.2")  # one cell: the input price
        dialog._save_provider()
        r.wait(lambda: "provider openai: saved and applied" in dialog.status.text())
        saved = config.read_text(encoding="utf-8")
        assert "# priced by hand" in saved and "# the thinker" in saved
        models = {m.name: m for m in load_config(config).providers["openai"].models}
        mini, o3 = models["gpt-4o-mini"], models["o3"]
        assert mini.price is not None and (mini.price.input, mini.price.output) == (0.2, 0.6)
        assert (mini.price.cached_input, mini.price.cache_write, mini.context_window) == (0.075, 0.3, 128000)
        assert o3.reasoning is True and o3.price is not None and o3.price.output == 8.0
    finally:
        r.app.quit()


def test_a_token_is_made_in_one_dialog_and_shown_once_with_copy(running: Running, qtbot: QtBot) -> None:
    dialog = settings(running)
    dialog._create_token()
    box = dialog.token_dialog
    assert box is not None and box.isVisible()
    flags = box.windowFlags()
    assert not flags & Qt.WindowType.WindowMinimizeButtonHint and not flags & Qt.WindowType.WindowMaximizeButtonHint
    assert not box.create_button.isEnabled()
    qtbot.keyClicks(box.user, "local")
    assert not box.create_button.isEnabled() and "reserved" in box.error.text()
    box.user.clear()
    qtbot.keyClicks(box.user, "alice")
    qtbot.keyClicks(box.workspace, "acme")
    qtbot.keyClicks(box.label, "Cursor")
    qtbot.mouseClick(box.create_button, Qt.MouseButton.LeftButton)
    running.wait(lambda: box.pages.currentIndex() == 1)
    token = box.token_field.text()
    assert token.startswith("omen-") and box.token_field.isReadOnly()
    assert box.shown_for.text() == "The token for alice (workspace acme):"
    qtbot.mouseClick(box.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == token
    service = running.app.host.service
    assert service is not None and service.tokens.identify(token) is not None

    def rows() -> list[list[str]]:
        return [[dialog.tokens.item(r, c).text() for c in range(3)] for r in range(dialog.tokens.rowCount())]

    running.wait(lambda: ["alice", "acme", "Cursor"] in rows())
    box.accept()


def test_token_rows_name_the_endpoint_token_and_whole_dates(running: Running) -> None:
    current = {"user": "local", "label": ENDPOINT_LABEL, "created": "2026-12-07T09:20:00Z", "prefix": "omen-abcd"}
    older = {**current, "prefix": "omen-zzzz"}
    assert token_row(current, "omen-abcd")[2] == "clients on this machine (the endpoint file)"
    assert "no longer handed out" in token_row(older, "omen-abcd")[2]
    assert len(token_row(current, "omen-abcd")[3]) == len("2026-12-07 09:20")
    dialog = settings(running)
    running.wait(lambda: dialog.tokens.rowCount() >= 1)
    labels = [dialog.tokens.item(r, 2).text() for r in range(dialog.tokens.rowCount())]
    assert labels.count("clients on this machine (the endpoint file)") == 1
    created = dialog.tokens.item(0, 3)
    width = dialog.tokens.fontMetrics().horizontalAdvance(created.text())
    assert dialog.tokens.columnWidth(3) >= width  # the date is not cut


def test_saving_without_changes_leaves_the_config_as_it_was(running: Running) -> None:
    dialog = settings(running)
    before = running.config.read_text(encoding="utf-8")
    for i in range(dialog.provider_list.count()):
        dialog.provider_list.setCurrentRow(i)
        dialog._save_provider()
        assert "nothing changed" in dialog.status.text()
    dialog._save_limits()
    assert "nothing changed" in dialog.status.text()
    assert running.config.read_text(encoding="utf-8") == before
    # one change writes that key, and no empty [quotas.default_user] / [limits.default_user]
    dialog.limit_edits[("limits", "user", None, "rpm")].setText("60")
    dialog._save_limits()
    running.wait(lambda: "saved and applied" in dialog.status.text())
    after = running.config.read_text(encoding="utf-8")
    assert "[limits.default_user]\nrpm = 60" in after and "quotas" not in after
    dialog.limit_edits[("limits", "user", None, "rpm")].setText("")
    dialog._save_limits()
    running.wait(lambda: "limits" not in running.config.read_text(encoding="utf-8"))


def test_buttons_are_as_wide_as_their_text(running: Running) -> None:
    dialog = settings(running)
    for button in dialog.findChildren(QPushButton):
        assert button.sizePolicy().horizontalPolicy() == QSizePolicy.Policy.Maximum, button.text()


def test_labels_that_carry_outside_text_are_plain_text(running: Running) -> None:
    """A provider's answer to "Test", a keyring or config error: shown as text, never as HTML."""
    dialog = settings(running)
    plain = Qt.TextFormat.PlainText
    assert dialog.status.textFormat() == plain and dialog.p_found.textFormat() == plain
    assert dialog.backend_label.textFormat() == plain and dialog.glyph_path.textFormat() == plain
    assert all(row["result"].textFormat() == plain for row in dialog.key_rows.values())


def test_the_footer_is_true_for_the_page_shown(running: Running) -> None:
    """"Changes apply at once" is not said on the Team page, whose settings need a new start."""
    dialog = settings(running)
    said = {}
    for i in range(dialog.tabs.count()):
        dialog.tabs.setCurrentIndex(i)
        said[dialog.tabs.tabText(i)] = dialog.status.text()
    assert said["Providers"] == said["API keys"] == said["Server"] == "Changes apply at once, without a restart."
    assert "starts again" in said["Team"] and "at once" not in said["Team"]
    assert "Glyph restarts" in said["Glyph"]
    dialog.say("Team settings saved; OMEN connects to the team store when it starts again.")
    dialog.tabs.setCurrentIndex(0)
    assert dialog.status.text() == "Changes apply at once, without a restart."
