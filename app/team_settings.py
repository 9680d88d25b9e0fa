"""Settings' Team page: ``[team]`` (docs/team.md), the team store's state, a connection test.

The URLs stay in the config file, which OMEN keeps readable only by you (0600): the router
reads them from there at start and has no keyring reference for them (unlike a provider's
``key = ["keyring:NAME"]``). On screen their passwords are replaced by a stand-in
(``app.team_check``). The team stores are opened when OMEN starts, so a saved change says
it applies at the next start; the state line reads ``/v1/omen/status``'s ``metering.team``
(the app's status snapshot), refreshed whenever the status changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from omen_local import config_edit
from omen_local.config import Config, TeamConfig, default_instance

from .team_check import Check, check_team, redact, restore
from .token_dialog import fit

OK_STYLE, BAD_STYLE, NOTE_STYLE = "color: #1b5e20;", "color: #b00020;", "color: #6b7280;"
Background = Callable[[Callable[[], Any], Callable[[Any, BaseException | None], None]], None]


def _when(iso: str | None) -> str:
    """An ISO UTC time as the user's local time; the text itself if it is not one."""
    if not iso:
        return "a moment ago"
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def store_line(name: str, health: Mapping[str, Any] | None) -> str:
    """One store's state in words: "reachable", "unreachable since …", "local"."""
    state = (health or {}).get("state")
    if state in ("ok", "not_started", "stopped"):
        return f"{name}: reachable"
    if state in ("unreachable", "failing"):
        return f"{name}: team store unreachable since {_when((health or {}).get('unreachable_since'))}"
    if state == "local":
        return f"{name}: on this machine (no Redis URL)"
    return f"{name}: unknown"


def team_state(running: TeamConfig | None, saved: TeamConfig | None, status: Mapping[str, Any] | None) -> list[str]:
    """What the page says about the team store, from the status snapshot (pure, for tests)."""
    if running != saved:
        return ["Saved. OMEN connects to the team store when it starts: quit and start OMEN Local again."]
    if running is None:
        return ["Not in a team: usage, quotas and limits stay on this machine (SQLite)."]
    team = ((status or {}).get("metering") or {}).get("team")
    if not isinstance(team, Mapping):
        return ["Team store: no state yet."]
    return [f"This OMEN is {team.get('instance', running.instance)} in the team's books.",
            store_line("Usage (PostgreSQL)", team.get("database")),
            store_line("Quotas (Redis)", team.get("quotas")),
            store_line("Rate limits (Redis)", team.get("rate_limits"))]


class TeamPage(QWidget):
    def __init__(self, apply: Callable[..., None], background: Background,
                 applied: Callable[[str], Callable[[BaseException | None], None]],
                 say: Callable[[str], None]) -> None:
        super().__init__()
        self._apply = apply
        self._background = background
        self._applied = applied
        self._say = say
        self._stored = TeamConfig("", None, "")
        form = QFormLayout(self)
        intro = QLabel("Share usage, quotas and rate limits with your team through PostgreSQL and Redis "
                       "(docs/team.md). Leave the database empty to keep everything on this machine.")
        intro.setWordWrap(True)
        form.addRow(intro)
        self.database = QLineEdit()
        self.database.setObjectName("team-database")
        self.database.setPlaceholderText("postgresql://omen:PASSWORD@db.example.lan:5432/omen")
        self.redis = QLineEdit()
        self.redis.setObjectName("team-redis")
        self.redis.setPlaceholderText("redis://:PASSWORD@db.example.lan:6379/0 (optional)")
        self.instance = QLineEdit()
        self.instance.setObjectName("team-instance")
        self.instance.setPlaceholderText(default_instance())
        form.addRow("Database URL", self.database)
        form.addRow("Redis URL", self.redis)
        form.addRow("This instance", self.instance)
        stored = QLabel("The URLs, passwords included, are kept in the config file, readable only by you; "
                        "passwords show as •••••• here.")
        stored.setWordWrap(True)
        stored.setStyleSheet(NOTE_STYLE)
        form.addRow(stored)
        buttons = QHBoxLayout()
        self.test_button = fit(QPushButton("Test connection"))
        self.test_button.setObjectName("team-test")
        self.test_button.clicked.connect(self.test)
        self.save_button = fit(QPushButton("Save team settings"))
        self.save_button.setObjectName("team-save")
        self.save_button.clicked.connect(self.save)
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        form.addRow(buttons)
        self.result = QLabel("")
        self.result.setObjectName("team-test-result")
        self.result.setTextFormat(Qt.TextFormat.PlainText)
        self.result.setWordWrap(True)
        form.addRow(self.result)
        self.state = QLabel("")
        self.state.setObjectName("team-state")
        self.state.setTextFormat(Qt.TextFormat.PlainText)
        self.state.setWordWrap(True)
        form.addRow("State", self.state)

    def load(self, config: Config) -> None:
        team = config.team
        self._stored = team or TeamConfig("", None, "")
        self.database.setText(redact(team.database_url) if team else "")
        self.redis.setText(redact(team.redis_url or "") if team else "")
        self.instance.setText(team.instance if team and team.instance != default_instance() else "")

    def show_state(self, running: TeamConfig | None, saved: TeamConfig | None,
                   status: Mapping[str, Any] | None) -> None:
        lines = team_state(running, saved, status)
        self.state.setText("\n".join(lines))
        bad = any("unreachable" in line for line in lines)
        self.state.setStyleSheet(BAD_STYLE if bad else NOTE_STYLE)

    def urls(self) -> tuple[str, str]:
        """The URLs as typed, with the stored passwords back in place of the stand-ins."""
        return (restore(self.database.text().strip(), self._stored.database_url),
                restore(self.redis.text().strip(), self._stored.redis_url or ""))

    def save(self) -> None:
        database, redis_url = self.urls()
        report = self._applied("team settings")

        def done(exc: BaseException | None) -> None:
            report(exc)
            if exc is None:
                self._say("Team settings saved; OMEN connects to the team store when it starts again.")

        self._apply(config_edit.team(database, redis_url, self.instance.text()), done=done)

    def test(self) -> None:
        database, redis_url = self.urls()
        if not database and not redis_url:
            self.result.setText("Enter the database URL first.")
            self.result.setStyleSheet(BAD_STYLE)
            return
        self.test_button.setEnabled(False)
        self.result.setText("Testing…")
        self.result.setStyleSheet(NOTE_STYLE)
        self._background(lambda: check_team(database, redis_url), self._tested)

    def _tested(self, checks: list[Check] | None, exc: BaseException | None) -> None:
        self.test_button.setEnabled(True)
        if checks is None:
            self.result.setText(f"Test failed: {exc}")
            self.result.setStyleSheet(BAD_STYLE)
            return
        self.result.setText("\n".join(f"{c.store}: {c.message}" for c in checks))
        self.result.setStyleSheet(OK_STYLE if all(c.ok for c in checks) else BAD_STYLE)
