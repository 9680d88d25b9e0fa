"""Settings: providers, API keys (OS keyring only), quotas and limits, server, client tokens, Glyph.

Every change is written to the user's config file with ``omen_local.config_edit`` (their
comments and layout kept) and applied to the running OMEN with ``OmenService.reload``: no
restart, but for the team stores (opened when OMEN starts) and Glyph (restarted with its
settings); the footer says which for the page shown. Blocking work (keyring, files, HTTP) runs off the UI thread; results come back
through the router thread's relay.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from omen_local import config_edit
from omen_local.config import UNLIMITED, Config, ConfigError, ModelSpec, ProviderConfig
from omen_local.probe import ProbeResult, check_provider
from omen_local.service import OmenService
from omen_local.tokens import ENDPOINT_LABEL

from . import keys
from .icons import app_icon
from .rich_text import plain_tip
from .state import NOT_SET_UP, OFF, UP, provider_detail, provider_state, short_why
from .team_settings import TeamPage
from .token_dialog import TokenDialog, fit

if TYPE_CHECKING:
    from .controller import OmenApp

log = logging.getLogger(__name__)
T = TypeVar("T")
_WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="settings-io")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DISCOVERED = "discovered"
LOADED_AS = Qt.ItemDataRole.UserRole + 1  # a configured model row's name as loaded


def _model_keys(m: ModelSpec) -> dict[str, Any]:
    """A loaded model as config keys, all of them (what a models edit starts from)."""
    keys: dict[str, Any] = {"name": m.name}
    if m.context_window is not None:
        keys["context_window"] = m.context_window
    if m.price is not None:
        keys.update(input=m.price.input, output=m.price.output)
        keys.update({k: v for k, v in (("cached_input", m.price.cached_input),
                                       ("cache_write", m.price.cache_write)) if v is not None})
    if m.reasoning is not None:
        keys["reasoning"] = m.reasoning
    return keys
OK_STYLE, BAD_STYLE, NOTE_STYLE = "color: #1b5e20;", "color: #b00020;", "color: #6b7280;"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _limit_text(value: float | None) -> str:
    if value is None:
        return ""
    if value == UNLIMITED:
        return "none"
    return f"{value:g}"


def _limit_value(text: str, where: str) -> float | str | None:
    """"" -> None (inherit), "none" -> no limit, else a number >= 0."""
    t = text.strip().lower()
    if not t:
        return None
    if t in ("none", "unlimited"):
        return "none"
    try:
        value = float(t)
    except ValueError:
        raise ConfigError(f"{where}: a number, or empty for no limit") from None
    if value < 0:
        raise ConfigError(f"{where}: must be >= 0")
    return int(value) if value.is_integer() else value


APPLIES_AT_ONCE = "Changes apply at once, without a restart."
FOOTER_NOTES = {
    "Glyph": "Changes apply at once: Glyph restarts with them, OMEN keeps serving.",
    "Team": "Team settings take effect when OMEN Local starts again (quit it, then start it).",
}


def footer_note(tab: str) -> str:
    """What the footer promises about the page shown: true for that page (the team stores are
    opened only when OMEN starts; Glyph restarts; everything else is reloaded in place)."""
    return FOOTER_NOTES.get(tab, APPLIES_AT_ONCE)


def token_row(entry: dict[str, str], endpoint_prefix: str) -> tuple[str, str, str, str, str]:
    """One row of the tokens table. The endpoint file's ``local`` token is named for what it is;
    an older one (made before the secret store lost it: a new keyring, a reset) is said to be
    unused, so two ``local`` rows explain themselves and the stale one can be revoked."""
    label = entry.get("label", "")
    if entry.get("user") == "local" and label == ENDPOINT_LABEL:
        label = ("clients on this machine (the endpoint file)" if entry.get("prefix") == endpoint_prefix
                 else "an older endpoint-file token, no longer handed out: revoke it")
    created = entry.get("created", "")
    try:
        when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).astimezone()
        created = when.strftime("%Y-%m-%d %H:%M")
    except ValueError:
        pass
    return entry.get("user", ""), entry.get("workspace", ""), label, created, entry.get("prefix", "")


class SettingsDialog(QDialog):
    def __init__(self, app: OmenApp) -> None:
        super().__init__()
        self.app = app
        # A window people keep open beside their editor, like the dashboard: a normal top-level
        # window (its own taskbar entry, minimise, resizable so maximise too), not a dialog
        # transient for the app that a window manager frames with buttons it then disables.
        self.setWindowFlags(Qt.WindowType.Window)
        self.setWindowTitle("OMEN Local: Settings")
        self.setWindowIcon(app_icon())
        self.setObjectName("settings")
        self.resize(860, 600)
        self.config: Config | None = None
        self.key_rows: dict[str, dict[str, Any]] = {}
        self._shown_provider: tuple[str, dict[str, Any]] = ("", {})
        self._shown_models: dict[str, dict[str, Any]] = {}  # loaded name -> its row as shown
        self._loaded_models: list[dict[str, Any]] = []  # every key of each loaded model
        self._shown_limits: dict[tuple[str, str, str | None, str], str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 14)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs)
        self.status = QLabel(APPLIES_AT_ONCE)
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # may carry upstream or error text
        self.status.setObjectName("settings-status")
        self.status.setStyleSheet(NOTE_STYLE)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        bottom.addWidget(close)
        layout.addLayout(bottom)
        self.tabs.addTab(self._providers_tab(), "Providers")
        self.tabs.addTab(self._keys_tab(), "API keys")
        self.tabs.addTab(self._limits_tab(), "Quotas && limits")
        self.tabs.addTab(self._server_tab(), "Server")
        self.tabs.addTab(self._tokens_tab(), "Client tokens")
        self.tabs.addTab(self._glyph_tab(), "Glyph")
        self.team_page = TeamPage(self.app.apply, self.background, self.applied, self.say)
        self.tabs.addTab(self.team_page, "Team")
        self.tabs.currentChanged.connect(self._tab_changed)
        self.app.host.status_changed.connect(self._status_changed)
        for button in self.findChildren(QPushButton):
            fit(button)

    # ---------------------------------------------------------------- helpers

    def background(self, work: Callable[[], T], done: Callable[[T | None, BaseException | None], None]) -> None:
        """Run blocking ``work`` on the settings worker; ``done(result, error)`` on the UI thread."""
        fut = _WORKER.submit(work)

        def deliver(f: concurrent.futures.Future[T]) -> None:
            exc = f.exception()
            done(None if exc else f.result(), exc)

        fut.add_done_callback(lambda f: self.app.host.relay.post(deliver, f))

    def _tab_changed(self, index: int) -> None:
        """The footer speaks for the page shown; an earlier result belonged to the page it came from."""
        self.status.setText(footer_note(self.tabs.tabText(index)))
        self.status.setStyleSheet(NOTE_STYLE)

    def say(self, text: str, ok: bool = True) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(OK_STYLE if ok else BAD_STYLE)

    def applied(self, what: str) -> Callable[[BaseException | None], None]:
        def done(exc: BaseException | None) -> None:
            if exc is None:
                self.say(f"{what}: saved and applied.")
                self.load()
            elif isinstance(exc, OSError):
                self.say(f"{what}: not applied: {exc.strerror or exc}. OMEN keeps serving where it was.", ok=False)
            else:
                self.say(f"{what}: not applied: {exc}", ok=False)

        return done

    def load(self) -> None:
        """Fill every tab from the running config."""
        self.config = self.app.host.config
        if self.config is None:
            return
        self._load_providers()
        self._load_keys()
        self._load_limits()
        self._load_server()
        self._load_tokens()
        self._load_glyph()
        self.team_page.load(self.config)
        self._show_team_state()

    def _status_changed(self) -> None:
        if self.isVisible():  # a hidden Settings costs nothing; load() brings it up to date
            self._show_team_state()

    def _show_team_state(self) -> None:
        host = self.app.host
        self.team_page.show_state(host.team_at_start, host.config.team if host.config else None, host.status)

    # ---------------------------------------------------------------- providers

    def _providers_tab(self) -> QWidget:
        page = QWidget()
        row = QHBoxLayout(page)
        left = QVBoxLayout()
        self.provider_list = QListWidget()
        self.provider_list.setObjectName("provider-list")
        self.provider_list.setFixedWidth(190)
        self.provider_list.currentTextChanged.connect(self._show_provider)
        add = QPushButton("Add provider…")
        add.clicked.connect(self._add_provider)
        left.addWidget(self.provider_list, 1)
        left.addWidget(add)
        row.addLayout(left)

        form_box = QGroupBox("Provider")
        form = QFormLayout(form_box)
        self.p_enabled = QCheckBox("Use this provider")
        self.p_enabled.setObjectName("provider-enabled")
        self.p_kind = QLabel("")
        self.p_found = QLabel("")
        self.p_found.setTextFormat(Qt.TextFormat.PlainText)  # may carry upstream or error text
        self.p_found.setWordWrap(True)
        self.p_found.setStyleSheet(NOTE_STYLE)
        self.p_url = QLineEdit()
        self.p_url.setObjectName("provider-url")
        self.p_models = QTableWidget(0, 4)
        self.p_models.setObjectName("provider-models")
        self.p_models.setHorizontalHeaderLabels(["model", "context window", "input $/M", "output $/M"])
        self.p_models.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.p_models.verticalHeader().setVisible(False)
        models_buttons = QHBoxLayout()
        add_model = QPushButton("Add model")
        add_model.clicked.connect(lambda: self.p_models.insertRow(self.p_models.rowCount()))
        remove_model = QPushButton("Remove model")
        remove_model.clicked.connect(lambda: self.p_models.removeRow(self.p_models.currentRow()))
        models_buttons.addWidget(add_model)
        models_buttons.addWidget(remove_model)
        models_buttons.addStretch(1)
        note = QLabel("Prices are USD per million tokens; leave them empty to use the shipped pricing table. "
                      "Ollama lists its models itself.")
        note.setWordWrap(True)
        note.setStyleSheet(NOTE_STYLE)
        save = QPushButton("Save provider")
        save.setObjectName("provider-save")
        save.clicked.connect(self._save_provider)
        form.addRow(self.p_enabled)
        form.addRow("Kind", self.p_kind)
        form.addRow("Base URL", self.p_url)
        form.addRow("Models", self.p_models)
        form.addRow("", self.p_found)
        form.addRow("", models_buttons)
        form.addRow(note)
        form.addRow("", save)
        row.addWidget(form_box, 1)
        return page

    def _load_providers(self) -> None:
        assert self.config is not None
        current = self.provider_list.currentItem().text() if self.provider_list.currentItem() else None
        self.provider_list.blockSignals(True)
        self.provider_list.clear()
        for name in self.config.providers:
            self.provider_list.addItem(name)
        self.provider_list.blockSignals(False)
        names = list(self.config.providers)
        if names:
            self.provider_list.setCurrentRow(names.index(current) if current in names else 0)
            self._show_provider(self.provider_list.currentItem().text())

    def _show_provider(self, name: str) -> None:
        if self.config is None or name not in self.config.providers:
            return
        pc = self.config.providers[name]
        self.p_enabled.setChecked(pc.enabled)
        self.p_kind.setText(pc.kind + (" (models discovered)" if pc.discover else ""))
        self.p_url.setText(pc.base_url)
        status = (self.app.host.status or {}).get("providers", {}).get(name, {})
        found = status.get("models") or []
        state = provider_state(status) if status else NOT_SET_UP
        if state == UP and found:
            self.p_found.setText(f"Serving now: {len(found):,} model{'s' if len(found) != 1 else ''}"
                                 " (discovered ones in grey; add a row to set a model's price)")
        elif state == NOT_SET_UP:
            self.p_found.setText("Not set up: add its API key on the API keys page.")
        elif state == OFF:
            self.p_found.setText("Off: OMEN does not use it.")
        else:
            self.p_found.setText(f"Not serving now: {short_why(name, status)}.")
        self.p_found.setToolTip(plain_tip(provider_detail(status)))
        configured = {m.name for m in pc.models}
        discovered = [n for n in found if n not in configured] if state == UP else []
        self.p_models.setRowCount(len(pc.models) + len(discovered))
        for i, m in enumerate(pc.models):
            values = (m.name, "" if m.context_window is None else f"{m.context_window:,}",
                      "" if m.price is None else f"{m.price.input:g}", "" if m.price is None else f"{m.price.output:g}")
            for j, v in enumerate(values):
                cell = QTableWidgetItem(v)
                if j == 0:
                    cell.setData(LOADED_AS, m.name)  # which model the row is, even once renamed
                self.p_models.setItem(i, j, cell)
        for i, model in enumerate(discovered, start=len(pc.models)):
            for j in range(self.p_models.columnCount()):  # shown, read-only, never written to the config
                item = QTableWidgetItem(model if j == 0 else "")
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                item.setForeground(QColor("#8a8f98"))
                item.setData(Qt.ItemDataRole.UserRole, DISCOVERED)
                item.setToolTip(f"discovered from {name}; OMEN uses it without a config entry")
                self.p_models.setItem(i, j, item)
        self._shown_provider = (name, self.provider_values())  # what Save compares against
        self._shown_models = {m.name: self._row_entry(i) or {"name": m.name} for i, m in enumerate(pc.models)}
        self._loaded_models = [_model_keys(m) for m in pc.models]

    def _cell(self, row: int, col: int) -> str:
        item = self.p_models.item(row, col)
        return item.text().strip() if item is not None else ""

    def _row_entry(self, r: int) -> dict[str, Any] | None:
        """Row ``r`` as the config keys the table shows; None for a discovered or nameless row."""
        name = self._cell(r, 0)
        first = self.p_models.item(r, 0)
        if not name or (first is not None and first.data(Qt.ItemDataRole.UserRole) == DISCOVERED):
            return None
        entry: dict[str, Any] = {"name": name}
        for col, key, cast in ((1, "context_window", int), (2, "input", float), (3, "output", float)):
            text = self._cell(r, col).replace(",", "")
            if text:
                try:
                    entry[key] = cast(text)
                except ValueError:
                    raise ConfigError(f"model {name}: {key} must be a number") from None
        return entry

    def provider_values(self) -> dict[str, Any]:
        """The form as config keys (models with their price overrides)."""
        models: list[Any] = []
        for r in range(self.p_models.rowCount()):
            entry = self._row_entry(r)
            if entry is not None:
                models.append(entry if len(entry) > 1 else entry["name"])
        return {"enabled": self.p_enabled.isChecked(), "base_url": self.p_url.text().strip(), "models": models}

    def model_rows(self) -> list[config_edit.ModelRow]:
        """The models table as edits: each row names the model it was loaded as and carries only
        the cells the user changed, so keys the table does not show (cached_input, cache_write,
        reasoning) and the file's comments are kept (``config_edit.provider_models``)."""
        rows: list[config_edit.ModelRow] = []
        for r in range(self.p_models.rowCount()):
            entry = self._row_entry(r)
            if entry is None:
                continue
            first = self.p_models.item(r, 0)
            loaded = first.data(LOADED_AS) if first is not None else None
            if not isinstance(loaded, str) or loaded not in self._shown_models:
                rows.append((None, entry))
                continue
            before = self._shown_models[loaded]
            rows.append((loaded, {k: entry.get(k) for k in ("name", "context_window", "input", "output")
                                  if entry.get(k) != before.get(k)}))
        return rows

    def _save_provider(self) -> None:
        item = self.provider_list.currentItem()
        if item is None:
            return
        name = item.text()
        try:
            values = self.provider_values()
        except ConfigError as exc:
            self.say(str(exc), ok=False)
            return
        pc = self.config.providers[name] if self.config else None
        if pc is not None and pc.discover and not values["models"]:
            values.pop("models")  # discovered: do not pin an empty list
        shown_name, shown = self._shown_provider
        if shown_name == name:  # only what the user changed: no copy of the shipped models list
            values = {k: v for k, v in values.items() if shown.get(k) != v}
        if not values:
            self.say(f"provider {name}: nothing changed.")
            return
        edits = []
        if "models" in values:  # only the cells changed, over the models as they are
            values.pop("models")
            edits.append(config_edit.provider_models(name, self.model_rows(), self._loaded_models))
        if values:
            edits.insert(0, config_edit.provider_table(name, values))
        self.app.apply(*edits, done=self.applied(f"provider {name}"))

    def _add_provider(self) -> None:
        name, ok = QInputDialog.getText(self, "Add provider", "Name (e.g. groq, openrouter, lmstudio):")
        if not ok or not name.strip():
            return
        from omen_local.providers.registry import provider_kinds

        kinds = sorted(provider_kinds())
        kind, ok = QInputDialog.getItem(self, "Add provider", "Kind:", kinds, kinds.index("openai"), False)
        if not ok:
            return
        url, ok = QInputDialog.getText(self, "Add provider", "Base URL (OpenAI-compatible: …/v1):")
        if not ok:
            return
        name = name.strip()
        values: dict[str, Any] = {"kind": kind, "base_url": url.strip()}
        if kind != "ollama":
            values["key"] = [f"keyring:{name}"]
        self.app.apply(config_edit.provider_table(name, values), done=self.applied(f"provider {name}"))

    # ---------------------------------------------------------------- API keys

    def _keys_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.backend_label = QLabel("")
        self.backend_label.setTextFormat(Qt.TextFormat.PlainText)  # may carry upstream or error text
        self.backend_label.setObjectName("keyring-backend")
        self.backend_label.setWordWrap(True)
        layout.addWidget(self.backend_label)
        self.keys_grid = QGridLayout()
        self.keys_grid.setHorizontalSpacing(10)
        self.keys_grid.setVerticalSpacing(8)
        holder = QFrame()
        holder.setLayout(self.keys_grid)
        layout.addWidget(holder)
        note = QLabel("Keys live only in the OS keyring (service \"omen-local\"), never in the config file. "
                      "\"Test\" asks the provider for its model list with the key: one free request.")
        note.setWordWrap(True)
        note.setStyleSheet(NOTE_STYLE)
        layout.addWidget(note)
        layout.addStretch(1)
        return page

    def _load_keys(self) -> None:
        assert self.config is not None
        while self.keys_grid.count():
            item = self.keys_grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.key_rows = {}
        for col, title in enumerate(("provider", "stored key", "new key", "", "", "", "")):
            header = QLabel(f"<b>{title}</b>")
            self.keys_grid.addWidget(header, 0, col)
        row = 1
        for name, pc in self.config.providers.items():
            entry = keys.keyring_name(pc)
            if entry is None:
                continue
            stored = QLabel("…")
            stored.setObjectName(f"key-stored:{name}")
            edit = QLineEdit()
            edit.setObjectName(f"key-edit:{name}")
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setPlaceholderText("paste a key to store it")
            edit.setMinimumWidth(220)
            save = QPushButton("Save")
            save.setObjectName(f"key-save:{name}")
            test = QPushButton("Test")
            test.setObjectName(f"key-test:{name}")
            remove = QPushButton("Delete…")
            remove.setObjectName(f"key-delete:{name}")
            remove.setEnabled(False)  # until the keyring says there is a key
            result = QLabel("")
            result.setTextFormat(Qt.TextFormat.PlainText)  # may carry upstream or error text
            result.setObjectName(f"key-result:{name}")
            result.setWordWrap(True)
            save.clicked.connect(lambda _c=False, n=name: self.save_key(n))
            test.clicked.connect(lambda _c=False, n=name: self.test_key(n))
            remove.clicked.connect(lambda _c=False, n=name: self.delete_key(n))
            for col, widget in enumerate((QLabel(name), stored, edit, save, test, remove, result)):
                if isinstance(widget, QPushButton):
                    fit(widget)
                self.keys_grid.addWidget(widget, row, col)
            self.keys_grid.setColumnStretch(6, 1)
            self.key_rows[name] = {"entry": entry, "stored": stored, "edit": edit, "save": save, "test": test,
                                   "delete": remove, "result": result, "pc": pc}
            row += 1
        self.background(self._read_keys, self._show_keys)

    def _read_keys(self) -> tuple[keys.Backend, dict[str, str | None]]:
        backend = keys.backend()
        found: dict[str, str | None] = {}
        if backend.ok:
            for name, row in list(self.key_rows.items()):
                try:
                    found[name] = keys.get(row["entry"])
                except Exception:
                    found[name] = None
        return backend, found

    def _show_keys(self, result: tuple[keys.Backend, dict[str, str | None]] | None, exc: BaseException | None) -> None:
        if result is None:
            self.backend_label.setText(f"Keyring error: {exc}")
            return
        backend, found = result
        if backend.ok:
            self.backend_label.setText(f"Keys are stored in the OS keyring ({backend.name}).")
            self.backend_label.setStyleSheet(OK_STYLE)
        else:
            self.backend_label.setText(keys.NO_BACKEND)
            self.backend_label.setStyleSheet(BAD_STYLE)
        for name, row in self.key_rows.items():
            row["stored"].setText(keys.mask(found.get(name)) if backend.ok else "no keyring")
            row["save"].setEnabled(backend.ok)
            row["edit"].setEnabled(backend.ok)
            row["delete"].setEnabled(backend.ok and bool(found.get(name)))

    def confirm_delete_key(self, name: str) -> bool:
        """Deleting a key needs a yes (No is the default): the keyring holds the only copy."""
        answer = QMessageBox.question(
            self, "Delete the key?",
            f"Delete the {name} API key from the OS keyring? OMEN stops using {name} until a key is "
            "stored again; the keyring holds the only copy.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_key(self, name: str) -> None:
        row = self.key_rows[name]
        if not self.confirm_delete_key(name):
            row["result"].setText("Kept.")
            row["result"].setStyleSheet(NOTE_STYLE)
            return
        entry = row["entry"]
        row["result"].setText("Deleting…")

        def done(_r: None, exc: BaseException | None) -> None:
            if exc is not None:  # a copy is left (keys.delete read it back): say so, show the one left
                row["result"].setText(f"Not deleted: {exc}")
                row["result"].setStyleSheet(BAD_STYLE)
                self.background(lambda: keys.get(entry), lambda value, _e: row["stored"].setText(keys.mask(value)))
                self.say(f"key for {name}: not deleted: {exc}", ok=False)
                return
            row["stored"].setText(keys.mask(None))
            row["delete"].setEnabled(False)
            row["result"].setText("Deleted from the keyring.")
            row["result"].setStyleSheet(OK_STYLE)
            self.app.reload(done=self.applied(f"key for {name} deleted"))  # the provider stops using it now

        self.background(lambda: keys.delete(entry), done)

    def save_key(self, name: str) -> None:
        row = self.key_rows[name]
        value = row["edit"].text().strip()
        if not value:
            row["result"].setText("Paste the key first.")
            return
        entry = row["entry"]
        row["result"].setText("Saving…")

        def done(_r: None, exc: BaseException | None) -> None:
            if exc is not None:
                row["result"].setText(str(exc))
                row["result"].setStyleSheet(BAD_STYLE)
                return
            row["edit"].clear()
            row["stored"].setText(keys.mask(value))
            row["delete"].setEnabled(True)
            row["result"].setText("Stored in the keyring.")
            row["result"].setStyleSheet(OK_STYLE)
            self.app.reload(done=self.applied(f"key for {name}"))  # the provider picks the key up now

        self.background(lambda: keys.put(entry, value), done)

    def test_key(self, name: str) -> None:
        row = self.key_rows[name]
        typed = row["edit"].text().strip()
        entry, pc = row["entry"], row["pc"]
        row["result"].setText("Testing…")
        row["result"].setStyleSheet(NOTE_STYLE)

        def got_key(key: str | None, exc: BaseException | None) -> None:
            if exc is not None or not key:
                row["result"].setText("No key stored for it yet." if exc is None else f"Keyring error: {exc}")
                row["result"].setStyleSheet(BAD_STYLE)
                return
            self.run_check(pc, key, row["result"])

        if typed:
            got_key(typed, None)
        else:
            self.background(lambda: keys.get(entry), got_key)

    def run_check(self, pc: ProviderConfig, key: str, label: QLabel) -> None:
        """One request to the provider's model list with ``key`` (``omen_local.probe``, as `omen doctor`)."""

        async def check(_service: OmenService) -> ProbeResult:
            return await check_provider(dataclasses.replace(pc, enabled=True), key)

        def shown(fut: concurrent.futures.Future[ProbeResult]) -> None:
            exc = fut.exception()
            if exc is not None:
                label.setText(f"test failed: {exc}")
                label.setStyleSheet(BAD_STYLE)
                return
            result = fut.result()
            label.setText(("OK: the key works; " if result.ok else "") + result.message)
            label.setStyleSheet(OK_STYLE if result.ok else BAD_STYLE)

        self.app.host.call(check, shown)

    # ---------------------------------------------------------------- quotas and limits

    def _limits_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.limit_edits: dict[tuple[str, str, str | None, str], QLineEdit] = {}
        quotas = QGroupBox("Spend quotas (USD per UTC day / month)")
        qf = QFormLayout(quotas)
        for label, scope, name in (("You (owner)", "user", "owner"), ("Every other user", "user", None)):
            row = QHBoxLayout()
            for key in ("daily_usd", "monthly_usd"):
                edit = QLineEdit()
                edit.setObjectName(f"quota:{scope}:{name or '*'}:{key}")
                edit.setPlaceholderText("no limit")
                edit.setMaximumWidth(120)
                row.addWidget(QLabel("per day" if key.startswith("daily") else "per month"))
                row.addWidget(edit)
                self.limit_edits[("quotas", scope, name, key)] = edit
            row.addStretch(1)
            qf.addRow(label, row)
        layout.addWidget(quotas)
        rates = QGroupBox("Rate limits (per minute)")
        rf = QFormLayout(rates)
        for label, scope, name in (("Every user", "user", None),):
            row = QHBoxLayout()
            for key, text in (("rpm", "requests"), ("tpm", "tokens")):
                edit = QLineEdit()
                edit.setObjectName(f"limit:{scope}:{name or '*'}:{key}")
                edit.setPlaceholderText("no limit")
                edit.setMaximumWidth(120)
                row.addWidget(QLabel(text))
                row.addWidget(edit)
                self.limit_edits[("limits", scope, name, key)] = edit
            row.addStretch(1)
            rf.addRow(label, row)
        layout.addWidget(rates)
        note = QLabel("Empty means no limit. Quotas set with `omen quota set` take precedence over these.")
        note.setStyleSheet(NOTE_STYLE)
        layout.addWidget(note)
        save = QPushButton("Save quotas and limits")
        save.setObjectName("limits-save")
        save.clicked.connect(self._save_limits)
        layout.addWidget(save, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addStretch(1)
        return page

    def _load_limits(self) -> None:
        assert self.config is not None
        c = self.config
        for (section, _scope, name, key), edit in self.limit_edits.items():
            if section == "quotas":
                q = c.quotas.default_user if name is None else c.quotas.users.get(name)
                edit.setText(_limit_text(getattr(q, key)) if q is not None else "")
            else:
                r = c.limits.default_user if name is None else c.limits.users.get(name)
                edit.setText(_limit_text(getattr(r, key)) if r is not None else "")
        self._shown_limits = {where: edit.text() for where, edit in self.limit_edits.items()}

    def _save_limits(self) -> None:
        edits: list[config_edit.Edit] = []
        grouped: dict[tuple[str, str, str | None], dict[str, float | str | None]] = {}
        try:
            for (section, scope, name, key), edit in self.limit_edits.items():
                if edit.text().strip() == self._shown_limits.get((section, scope, name, key), "").strip():
                    continue  # unchanged: the file keeps what it had (no empty tables written)
                grouped.setdefault((section, scope, name), {})[key] = _limit_value(edit.text(), key)
        except ConfigError as exc:
            self.say(str(exc), ok=False)
            return
        for (section, scope, name), values in grouped.items():
            edits.append(config_edit.quota(scope, name, values) if section == "quotas"
                         else config_edit.limit(scope, name, values))
        if not edits:
            self.say("quotas and limits: nothing changed.")
            return
        self.app.apply(*edits, done=self.applied("quotas and limits"))

    # ---------------------------------------------------------------- server

    def _server_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.s_host = QComboBox()
        self.s_host.setObjectName("server-host")
        self.s_host.setEditable(True)
        self.s_host.addItems(["127.0.0.1", "::1", "0.0.0.0"])
        self.s_port = QSpinBox()
        self.s_port.setObjectName("server-port")
        self.s_port.setRange(1, 65535)
        note = QLabel("OMEN listens on loopback by default: only programs on this machine can reach it. "
                      "Another address lets other machines try (they still need a token).")
        note.setWordWrap(True)
        note.setStyleSheet(NOTE_STYLE)
        save = QPushButton("Apply address")
        save.setObjectName("server-save")
        save.clicked.connect(self._save_server)
        form.addRow("Bind address", self.s_host)
        form.addRow("Port", self.s_port)
        form.addRow(note)
        form.addRow("", save)
        return page

    def _load_server(self) -> None:
        assert self.config is not None
        self.s_host.setCurrentText(self.config.server.host)
        service = self.app.host.service
        self.s_port.setValue(self.config.server.port or (service.port if service is not None else 8765))

    def confirm_exposure(self, host: str) -> bool:
        """Binding beyond loopback needs a yes."""
        answer = QMessageBox.warning(
            self, "Listen beyond this machine?",
            f"Binding to {host} lets other machines on your network reach OMEN (with a token). "
            "Continue?", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def _save_server(self) -> None:
        host = self.s_host.currentText().strip()
        port = self.s_port.value()
        if not is_loopback(host) and not self.confirm_exposure(host):
            self.say("Address unchanged.")
            return
        self.app.apply(config_edit.server(host, port), done=self.applied(f"address {host}:{port}"))

    # ---------------------------------------------------------------- client tokens

    def _tokens_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.tokens = QTableWidget(0, 5)
        self.tokens.setObjectName("tokens")
        self.tokens.setHorizontalHeaderLabels(["user", "workspace", "label", "created", "prefix"])
        self.tokens.verticalHeader().setVisible(False)
        self.tokens.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tokens.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tokens.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.tokens)
        row = QHBoxLayout()
        create = QPushButton("Create token…")
        create.clicked.connect(self._create_token)
        revoke = QPushButton("Revoke selected")
        revoke.setObjectName("token-revoke")
        revoke.clicked.connect(self._revoke_token)
        copy = QPushButton("Copy your own token")
        copy.clicked.connect(lambda: self.copy(self.app.host.owner_token, "your token"))
        for b in (create, revoke, copy):
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        note = QLabel("A client token names a user (and a default workspace) for usage and quotas. "
                      "It is shown once, when created; OMEN keeps only its hash.")
        note.setWordWrap(True)
        note.setStyleSheet(NOTE_STYLE)
        layout.addWidget(note)
        return page

    def _load_tokens(self) -> None:
        service = self.app.host.service
        if service is None:
            return
        book = service.tokens

        current = self.app.host.client_token[:9]

        def show(rows: list[dict[str, str]] | None, exc: BaseException | None) -> None:
            rows = rows or []
            self.tokens.setRowCount(len(rows))
            for i, entry in enumerate(rows):
                values = token_row(entry, current)
                for j, value in enumerate(values):
                    item = QTableWidgetItem(value)
                    if j == 3:
                        item.setToolTip(entry.get("created", ""))
                    self.tokens.setItem(i, j, item)
            self.tokens.resizeColumnsToContents()  # dates and prefixes whole, never cut

        self.background(book.list, show)

    def create_token(self, user: str, workspace: str, label: str, shown: Callable[[str], None],
                     failed: Callable[[BaseException | None], None] | None = None) -> None:
        service = self.app.host.service
        if service is None:
            return
        book = service.tokens

        def done(token: str | None, exc: BaseException | None) -> None:
            if token is None:
                self.say(f"token not created: {exc}", ok=False)
                if failed is not None:
                    failed(exc)
                return
            self._load_tokens()
            shown(token)

        self.background(lambda: book.create(user, workspace or None, label or None), done)

    def _create_token(self) -> None:
        self.token_dialog = TokenDialog(
            lambda user, workspace, label, done: self.create_token(
                user, workspace, label, lambda token: done(token, None), lambda exc: done(None, exc)), self)
        self.token_dialog.open()

    def _revoke_token(self) -> None:
        row = self.tokens.currentRow()
        service = self.app.host.service
        if row < 0 or service is None:
            return
        item = self.tokens.item(row, 4)
        prefix = item.text() if item is not None else ""
        if not prefix:
            return
        book = service.tokens

        def done(n: int | None, exc: BaseException | None) -> None:
            self._load_tokens()
            self.say(f"revoked {n or 0} token(s)" if exc is None else f"not revoked: {exc}", ok=exc is None)

        self.background(lambda: book.revoke(prefix), done)

    def copy(self, text: str, what: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.say(f"Copied {what} to the clipboard.")

    # ---------------------------------------------------------------- Glyph

    def _glyph_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        roots_box = QGroupBox("Roots: the folders tools may touch")
        rl = QVBoxLayout(roots_box)
        self.roots = QListWidget()
        self.roots.setObjectName("glyph-roots")
        rb = QHBoxLayout()
        add_root = QPushButton("Add folder…")
        add_root.clicked.connect(self._add_root)
        remove_root = QPushButton("Remove")
        remove_root.clicked.connect(lambda: self.roots.takeItem(self.roots.currentRow()))
        rb.addWidget(add_root)
        rb.addWidget(remove_root)
        rb.addStretch(1)
        rl.addWidget(self.roots)
        rl.addLayout(rb)
        layout.addWidget(roots_box)
        rules_box = QGroupBox("Consent rules (first match wins; deny beats allow)")
        ru = QVBoxLayout(rules_box)
        self.rules = QTableWidget(0, 4)
        self.rules.setObjectName("glyph-rules")
        self.rules.setHorizontalHeaderLabels(["action (allow/ask/deny)", "server", "tool", "path glob"])
        self.rules.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.rules.verticalHeader().setVisible(False)
        rrow = QHBoxLayout()
        add_rule = QPushButton("Add rule")
        add_rule.clicked.connect(self._add_rule)
        remove_rule = QPushButton("Remove rule")
        remove_rule.clicked.connect(lambda: self.rules.removeRow(self.rules.currentRow()))
        rrow.addWidget(add_rule)
        rrow.addWidget(remove_rule)
        rrow.addStretch(1)
        ru.addWidget(self.rules)
        ru.addLayout(rrow)
        layout.addWidget(rules_box)
        save = QPushButton("Save Glyph settings")
        save.setObjectName("glyph-save")
        save.clicked.connect(self._save_glyph)
        self.glyph_path = QLabel("")
        self.glyph_path.setTextFormat(Qt.TextFormat.PlainText)  # may carry upstream or error text
        self.glyph_path.setStyleSheet(NOTE_STYLE)
        bottom = QHBoxLayout()
        bottom.addWidget(self.glyph_path, 1)
        bottom.addWidget(save)
        layout.addLayout(bottom)
        return page

    def _glyph_file(self) -> Path:
        from glyph.config import default_config_path

        return self.app.options.glyph_config or default_config_path()

    def _load_glyph(self) -> None:
        from glyph.config import load_config

        self.glyph_path.setText(f"Saved to {self._glyph_file()}; Glyph restarts with it.")
        try:
            config = load_config(self.app.options.glyph_config)
        except Exception as exc:
            self.glyph_path.setText(f"Glyph's config cannot be read: {exc}")
            return
        self.roots.clear()
        for root in config.roots:
            self.roots.addItem(str(root))
        self.rules.setRowCount(len(config.rules))
        for i, rule in enumerate(config.rules):
            for j, v in enumerate((rule.action, rule.server, rule.tool, rule.path or "")):
                self.rules.setItem(i, j, QTableWidgetItem(v))

    def _add_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder tools may use")
        if folder:
            self.roots.addItem(folder)

    def _add_rule(self) -> None:
        row = self.rules.rowCount()
        self.rules.insertRow(row)
        for j, v in enumerate(("ask", "*", "*", "")):
            self.rules.setItem(row, j, QTableWidgetItem(v))

    def glyph_values(self) -> tuple[list[str], list[dict[str, str]]]:
        roots = [self.roots.item(i).text() for i in range(self.roots.count())]
        rules = []
        for r in range(self.rules.rowCount()):
            items = [self.rules.item(r, c) for c in range(4)]
            cells = [item.text().strip() if item is not None else "" for item in items]
            if any(cells):
                rules.append({"action": cells[0], "server": cells[1] or "*", "tool": cells[2] or "*",
                              "path": cells[3]})
        return roots, rules

    def _save_glyph(self) -> None:
        from .glyph_settings import save

        roots, rules = self.glyph_values()
        path = self._glyph_file()

        def done(_r: None, exc: BaseException | None) -> None:
            if exc is not None:
                self.say(f"Glyph settings not saved: {exc}", ok=False)
                return
            self.say("Glyph settings saved; Glyph restarts with them.")
            self.app.restart_glyph()

        self.background(lambda: save(path, roots, rules), done)
