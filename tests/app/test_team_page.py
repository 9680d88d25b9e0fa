"""Settings' Team page (issue 23, item 1): [team] edited in the app, its state, a connection
test off the UI thread, against real PostgreSQL and Redis (tests/team/servers.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.team_check import HIDDEN, check_team, redact, restore
from app.team_settings import team_state
from omen_local import config_edit
from omen_local.config import TeamConfig, load_config
from tests.app.conftest import make_config, start_app
from tests.team.conftest import postgres, redis_server, team_db, team_redis  # noqa: F401 (fixtures)
from tests.team.servers import Postgres, Redis


def test_urls_are_shown_without_their_passwords_and_saved_with_them() -> None:
    url = "postgresql://omen:s3cr%40t@db.lan:5432/omen"
    shown = redact(url)
    assert shown == f"postgresql://omen:{HIDDEN}@db.lan:5432/omen" and "s3cr" not in shown
    assert restore(shown, url) == url  # unchanged: the stored password goes back
    assert restore(shown.replace("db.lan", "db2.lan"), url) == "postgresql://omen:s3cr%40t@db2.lan:5432/omen"
    assert restore("postgresql://omen:new@db.lan/omen", url) == "postgresql://omen:new@db.lan/omen"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


QUERY_PASSWORDS = [
    # libpq takes password= (and sslpassword=) in the query; its keys and values are percent-decoded
    ("postgresql://omen@db.lan/omen?sslmode=require&password=s3cr%40t", "s3cr%40t",
     f"postgresql://omen@db.lan/omen?sslmode=require&password={HIDDEN}"),
    ("postgresql://omen@db.lan/omen?pass%77ord=s3cr%40t", "s3cr%40t", f"postgresql://omen@db.lan/omen?pass%77ord={HIDDEN}"),
    ("postgresql://omen:pw-one@db.lan/omen?sslpassword=key-pass", "key-pass",
     f"postgresql://omen:{HIDDEN}@db.lan/omen?sslpassword={HIDDEN}"),
    # redis-py passes any query argument on, password= included
    ("redis://db.lan:6379/0?password=s3cr%40t", "s3cr%40t", f"redis://db.lan:6379/0?password={HIDDEN}"),
]


@pytest.mark.parametrize(("url", "secret", "shown"), QUERY_PASSWORDS)
def test_a_password_in_the_query_is_hidden_and_put_back(url: str, secret: str, shown: str) -> None:
    """Review of issue 20, item 4: ``?password=`` showed in clear in the Settings fields."""
    assert redact(url) == shown
    assert secret not in redact(url) and "s3cr@t" not in redact(url)
    assert restore(redact(url), url) == url
    assert restore(redact(url).replace("db.lan", "db2.lan"), url) == url.replace("db.lan", "db2.lan")
    # a stand-in where the stored URL has no password: the key goes, no "••••••" is saved
    assert HIDDEN not in restore(shown, "postgresql://omen@db.lan/omen")


def test_a_driver_error_never_shows_a_query_password() -> None:
    """libpq echoes a malformed token back: "invalid percent-encoded token: "<the password>""."""
    port = _closed_port()
    for url in (f"postgresql://omen@127.0.0.1:{port}/omen?password=sec%zzret-9",
                f"postgresql://omen@127.0.0.1:{port}/omen?pass%77ord=sec%zzret-9"):
        [check] = check_team(url, "")
        assert not check.ok and "percent-encoded" in check.message, check.message
        assert "sec%zzret" not in check.message and HIDDEN in check.message


def test_state_words() -> None:
    team = TeamConfig("postgresql://x@h/db", "redis://h", "alice-laptop")
    assert team_state(None, None, None) == [
        "Not in a team: usage, quotas and limits stay on this machine (SQLite)."]
    assert "quit and start OMEN Local again" in team_state(None, team, None)[0]
    status = {"metering": {"team": {"instance": "alice-laptop",
                                    "database": {"state": "unreachable", "unreachable_since": "2026-12-07T09:00:00Z"},
                                    "quotas": {"state": "ok"}, "rate_limits": {"state": "local"}}}}
    lines = team_state(team, team, status)
    assert lines[0] == "This OMEN is alice-laptop in the team's books."
    assert lines[1].startswith("Usage (PostgreSQL): team store unreachable since 2026-12-07 ")
    assert lines[2] == "Quotas (Redis): reachable" and lines[3] == "Rate limits (Redis): on this machine (no Redis URL)"


def test_the_config_edit_adds_and_removes_the_team_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# mine\n[server]\nport = 0\n", encoding="utf-8")
    config_edit.apply(path, config_edit.team("postgresql://omen:pw@h/omen", "", ""))
    assert load_config(path).team == TeamConfig("postgresql://omen:pw@h/omen", None, load_config(path).team.instance)
    assert "redis_url" not in path.read_text(encoding="utf-8") and "instance" not in path.read_text(encoding="utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config_edit.apply(path, config_edit.team("", "", ""))
    assert load_config(path).team is None and path.read_text(encoding="utf-8").startswith("# mine\n[server]")


@pytest.mark.timeout(120)
def test_connection_test_against_real_servers(postgres: Postgres, redis_server: Redis) -> None:  # noqa: F811
    ok = check_team(postgres.url(), redis_server.url)
    assert [c.ok for c in ok] == [True, True], ok
    assert ok[0].message.startswith("reachable (PostgreSQL ") and ok[1].message.startswith("reachable (Redis ")
    wrong_pg = postgres.url().replace(postgres.password, "wrong-password-123")
    wrong_redis = redis_server.url.replace(redis_server.password, "wrong-password-456")
    bad = check_team(wrong_pg, wrong_redis)
    assert [c.ok for c in bad] == [False, False]
    said = " ".join(c.message for c in bad)
    assert "password" in said.lower() and "wrong-password" not in said  # what failed, never the password
    closed = check_team(f"postgresql://omen:x@127.0.0.1:{_closed_port()}/omen", "")
    assert not closed[0].ok and "cannot connect" in closed[0].message


@pytest.mark.timeout(120)
def test_query_passwords_against_real_servers(postgres: Postgres, redis_server: Redis) -> None:  # noqa: F811
    """The drivers do take ``?password=``: the form is real, so it is hidden like the other."""
    pg = postgres.url().replace(f":{postgres.password}@", "@") + f"?password={postgres.password}"
    rd = redis_server.url.replace(f":{redis_server.password}@", "") + f"?password={redis_server.password}"
    assert [c.ok for c in check_team(pg, rd)] == [True, True]
    assert postgres.password not in redact(pg) and redis_server.password not in redact(rd)
    assert [c.ok for c in check_team(restore(redact(pg), pg), restore(redact(rd), rd))] == [True, True]
    bad = check_team(pg.replace(postgres.password, "wrong-password-123"),
                     rd.replace(redis_server.password, "wrong-password-456"))
    assert [c.ok for c in bad] == [False, False] and "wrong-password" not in " ".join(c.message for c in bad)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(180)
def test_the_team_page_in_the_app(qtbot, tmp_path: Path, upstreams, team_db: str, team_redis: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Save [team] from the page; after a start with it the page says both stores are reachable."""
    config = make_config(tmp_path, upstreams)
    running = start_app(qtbot, config)
    try:
        running.app.open_settings()
        dialog = running.app.settings
        assert dialog is not None
        page = dialog.team_page
        assert "Not in a team" in page.state.text()
        page.database.setText(team_db)
        page.redis.setText(team_redis)
        page.instance.setText("alice-laptop")
        qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
        assert not page.test_button.isEnabled()  # running on the worker, the UI thread is free
        running.wait(lambda: page.test_button.isEnabled(), timeout_ms=30_000)
        assert page.result.text().count("reachable (") == 2, page.result.text()
        qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
        running.wait(lambda: "connects to the team store when it starts again" in dialog.status.text())
        assert load_config(config).team == TeamConfig(team_db, team_redis, "alice-laptop")
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert "quit and start OMEN Local again" in page.state.text()
        assert HIDDEN in page.database.text() and HIDDEN in page.redis.text()  # the passwords are not on screen
        qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)  # saved again as shown: passwords kept
        running.wait(lambda: "connects to the team store" in dialog.status.text())
        assert load_config(config).team == TeamConfig(team_db, team_redis, "alice-laptop")
    finally:
        running.app.quit()

    again = start_app(qtbot, config)  # the next start opens the team stores
    try:
        again.app.open_settings()
        dialog = again.app.settings
        assert dialog is not None

        def said() -> str:
            return dialog.team_page.state.text()

        again.wait(lambda: "Usage (PostgreSQL): reachable" in said() and "Quotas (Redis): reachable" in said(),
                   timeout_ms=30_000)
        assert "This OMEN is alice-laptop in the team's books." in said()
    finally:
        again.app.quit()
