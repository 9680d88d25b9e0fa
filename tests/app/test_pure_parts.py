"""The app's Qt-free parts: bounded live buffers, overall state, notice limiting, autostart."""

from __future__ import annotations

import configparser
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from app import autostart
from app.notify import NoticeLimiter, Notices
from app.state import (
    DEGRADED,
    DOWN,
    HEALTHY,
    QUOTA,
    RECENT_ROWS,
    STOPPED,
    TRACKED_REQUESTS,
    WINDOW_S,
    Failover,
    LiveStats,
    Overall,
    overall,
    provider_label,
    quota_fractions,
)
from omen_local.observe import HealthEvent, UsageEvent
from omen_local.providers.base import Usage

T0 = 1_750_000_000.0


def event(i: int, t: float, provider: str = "ollama", outcome: str = "ok", request: str | None = None) -> UsageEvent:
    return UsageEvent(
        attempt_id=f"a{i}", request_id=request or f"r{i}", user="owner", workspace=None, client="OpenAI/Python 1.0",
        session=None, provider=provider, model="m", strategy="single", usage=Usage(10, 5), cost_usd=0.001,
        ttft_ms=50.0 + i % 7, total_ms=200.0 + i % 11, outcome=outcome, time=t, intent="chat")


def test_a_day_at_50_requests_per_second_keeps_memory_bounded() -> None:
    stats = LiveStats()
    per_day = 50 * 86400
    step = 86400 / 60_000  # 60k events spread over one day: every slot is reused ~100 times, as at 50/s
    providers = ("ollama", "openai", "anthropic")
    for i in range(20_000):
        stats.add(event(i, T0 + i * step, providers[i % 3], "error" if i % 50 == 0 else "ok"))
    baseline_bytes = stats.nbytes()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(20_000, 60_000):
        stats.add(event(i, T0 + i * step, providers[i % 3], "error" if i % 50 == 0 else "ok"))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert stats.nbytes() == baseline_bytes  # the rings never grow
    assert len(stats.recent) == RECENT_ROWS
    assert len(stats._requests) <= TRACKED_REQUESTS
    assert set(stats.rings) == set(providers)
    assert grown < 1_000_000, f"memory grew by {grown} bytes over 40k events"
    assert stats.events_seen == 60_000 and per_day > stats.events_seen


def test_rings_aggregate_per_second_and_forget_the_old() -> None:
    stats = LiveStats(window=60)
    now = int(T0)
    for i in range(10):
        stats.add(event(i, now - 0.5))  # ten requests in the last second
    stats.add(event(99, now - 120))  # older than the window: ignored by the series
    rate = stats.total.series("count", now - 1)
    assert rate[-1] == 10 and rate.sum() == 10
    lat = stats.latency("ollama", "lat", now - 1, smooth=1)
    assert math.isclose(lat[-1], np.mean([200.0 + i % 11 for i in range(10)]))
    assert np.isnan(lat[0])
    assert WINDOW_S == 600


def test_failover_is_detected_and_local_to_cloud_flagged() -> None:
    stats = LiveStats()
    stats.set_providers({"ollama": {"kind": "ollama", "base_url": "http://127.0.0.1:11434"},
                         "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"}})
    assert stats.add(event(1, T0, "ollama", "error", request="r")) is None
    failover = stats.add(event(2, T0 + 0.1, "openai", "ok", request="r"))
    assert failover == Failover("r", "ollama", "openai", True, T0 + 0.1)
    assert stats.failover_count == 1


def test_overall_state_order() -> None:
    up = {"enabled": True, "usable": True, "state": "up", "models": ["a"]}
    down = {"enabled": True, "usable": True, "state": "down", "last_error": "refused"}
    off = {"enabled": False, "usable": False, "reason": "disabled"}
    assert overall(None, {}, False).state == STOPPED
    assert overall({"providers": {"a": up, "b": off}}, {}, True).state == HEALTHY
    state = overall({"providers": {"a": up, "b": down}}, {}, True)
    assert state.state == DEGRADED and "b" in state.headline and "b: not reachable" in state.detail
    assert overall({"providers": {"b": down}}, {}, True).state == DOWN
    # a cloud provider without its key is "not set up", not down: an Ollama-only user is healthy
    no_key = {"enabled": True, "usable": False, "kind": "openai",
              "reason": "no API key (set it with `omen key set openai` or the environment)"}
    assert overall({"providers": {"ollama": up, "openai": no_key}}, {}, True) == Overall(HEALTHY, "Running")
    assert provider_label("openai", no_key) == "openai — not set up"
    nothing = overall({"providers": {"openai": no_key}}, {}, True)
    assert nothing.state == DOWN and nothing.headline == "Nothing set up yet"
    # the library's words never reach the headline, the detail or the menu
    ollama_down = {"enabled": True, "usable": True, "kind": "ollama", "state": "down",
                   "last_error": "Cannot connect to host 127.0.0.1:11434 ssl:default [Connect call failed]"}
    said = overall({"providers": {"ollama": ollama_down, "a": up}}, {}, True)
    assert said.detail == ("ollama: not running",) and "Cannot" not in said.headline
    assert provider_label("ollama", ollama_down) == "ollama — not running"
    q = overall({"providers": {"a": up}}, {"user owner daily_usd": 0.85}, True)
    assert q.state == QUOTA and "85%" in q.headline
    assert quota_fractions({"user owner": (4.0, 10.0)}, {"user owner": {"daily_usd": 5.0, "monthly_usd": math.inf}}) == {
        "user owner daily_usd": 0.8}
    # a team store away (docs/team.md): degraded, and the tray says since when
    away = {"providers": {"a": up}, "metering": {"team": {
        "state": "degraded", "message": "team store unreachable since 2026-12-07T10:00:00Z: Redis (quotas)"}}}
    team = overall(away, {}, True)
    assert team.state == DEGRADED and team.headline == "Team store unreachable since 2026-12-07T10:00:00Z"
    assert "team store unreachable since 2026-12-07T10:00:00Z: Redis (quotas)" in team.detail
    assert overall({"providers": {"a": up}, "metering": {"team": {"state": "ok", "message": None}}}, {}, True).state == HEALTHY


def test_notice_limiter_never_floods() -> None:
    limiter = NoticeLimiter(per_key_s=300, burst=3, window_s=60)
    assert limiter.allow("a", 0)
    assert not limiter.allow("a", 10)  # same subject within 5 min
    assert limiter.allow("b", 11) and limiter.allow("c", 12)
    assert not limiter.allow("d", 13)  # 3 per minute in all
    assert limiter.allow("d", 61)  # the window moved on
    assert limiter.allow("a", 301)  # the subject may speak again
    assert limiter.suppressed == 2
    for i in range(5000):  # many subjects: bounded memory
        limiter.allow(f"k{i}", 1000 + i * 100)
    assert len(limiter._last) <= 1024


def test_notices_say_down_once_back_once_and_quota_thresholds() -> None:
    notices = Notices(NoticeLimiter(per_key_s=0, burst=100))
    down = notices.health(HealthEvent("openai", "down", "refused"), 0)
    assert down is not None and down.title == "openai is down"
    assert notices.health(HealthEvent("openai", "down", "refused"), 1) is None
    back = notices.health(HealthEvent("openai", "up"), 2)
    assert back is not None and back.title == "openai is back"
    assert notices.health(HealthEvent("openai", "up"), 3) is None
    assert [n.title for n in notices.quotas({"user owner daily_usd": 0.5}, 4)] == []
    assert [n.title for n in notices.quotas({"user owner daily_usd": 0.82}, 5)] == ["Quota 80%"]
    assert notices.quotas({"user owner daily_usd": 0.9}, 6) == []
    assert [n.title for n in notices.quotas({"user owner daily_usd": 1.0}, 7)] == ["Quota 100%"]
    assert notices.failover(Failover("r", "openai", "anthropic", False, 0), 8) is None  # cloud to cloud: quiet
    assert notices.failover(Failover("r", "ollama", "openai", True, 0), 9) is not None


@pytest.mark.skipif(autostart.sys.platform != "linux", reason="XDG autostart is Linux")
def test_autostart_writes_and_removes_an_xdg_desktop_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert not autostart.is_enabled()
    path = autostart.enable(["/opt/omen venv/bin/python", "-m", "app", "--minimized"])
    assert path == tmp_path / "cfg" / "autostart" / "omen-local.desktop"
    assert autostart.is_enabled()
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read(path)
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Name"] == "OMEN Local" and d["Terminal"] == "false"
    assert d["Exec"] == '"/opt/omen venv/bin/python" -m app --minimized'
    assert d["X-GNOME-Autostart-enabled"] == "true"
    autostart.disable()
    assert not path.exists() and not autostart.is_enabled()
    autostart.disable()  # twice is fine


def test_audit_view_filters_and_shows_the_chain_state(qtbot: QtBot, tmp_path: Path) -> None:
    from app.audit_view import AuditView
    from glyph.audit import AuditEntry, AuditLog
    from glyph.db import Store

    with Store(tmp_path / "g.db") as store:
        log = AuditLog(store)
        log.append(AuditEntry(client="code", server="rune", tool="read_file", decision="allow", outcome="ok"))
        log.append(AuditEntry(client="code", server="rune", tool="write_file", decision="deny", outcome="denied"))
        log.append(AuditEntry(client="cursor", server="git", tool="commit", decision="allow", outcome="ok"))
        view = AuditView(log)
        qtbot.waitUntil(lambda: "Chain intact: 3 entries" in view.status.text(), timeout=30_000)  # verified off the UI thread
        view.filter.setText("rune")
        assert view.visible_rows() == 2
        view.decision.setCurrentText("deny")
        assert view.visible_rows() == 1
        view.filter.setText("")
        view.decision.setCurrentText("allow")
        assert view.visible_rows() == 2
        view.filter.setText("cursor")
        assert view.visible_rows() == 1
        log.append(AuditEntry(client="cursor", server="git", tool="push", decision="allow", outcome="ok"))
        view.refresh()  # incremental: only row 4 is walked
        qtbot.waitUntil(lambda: "Chain intact: 4 entries" in view.status.text(), timeout=30_000)
        store.db.execute_sql("DROP TRIGGER audit_no_update")
        store.Audit.update(outcome="ok").where(store.Audit.id == 2).execute()
        view.refresh()  # incremental: row 2 is behind the verified head, so not walked again
        qtbot.waitUntil(lambda: "Chain intact: 4 entries" in view.status.text(), timeout=30_000)
        view.verify_button.click()  # a full walk finds an edit anywhere
        qtbot.waitUntil(lambda: "TAMPERED at row 2" in view.status.text(), timeout=30_000)
        view.close()
        fresh = AuditView(log)  # a new viewer starts with a full walk
        qtbot.waitUntil(lambda: "TAMPERED at row 2" in fresh.status.text(), timeout=30_000)
        fresh.close()


def test_audit_refresh_notices_an_edited_head(qtbot: QtBot, tmp_path: Path) -> None:
    from app.audit_view import AuditView
    from glyph.audit import AuditEntry, AuditLog
    from glyph.db import Store

    with Store(tmp_path / "g.db") as store:
        log = AuditLog(store)
        for tool in ("a", "b"):
            log.append(AuditEntry(client="c", server="s", tool=tool, decision="allow", outcome="ok"))
        view = AuditView(log)
        qtbot.waitUntil(lambda: "Chain intact: 2 entries" in view.status.text(), timeout=30_000)
        store.db.execute_sql("DROP TRIGGER audit_no_update")
        store.Audit.update(outcome="edited").where(store.Audit.id == 2).execute()
        view.refresh()
        qtbot.waitUntil(lambda: "TAMPERED at row 2" in view.status.text(), timeout=30_000)
        view.close()


def test_get_started_steps_in_plain_words() -> None:
    from app.state import OPEN_KEYS, START_OLLAMA, get_started

    no_key = {"enabled": True, "usable": False, "kind": "openai", "reason": "no API key (set it with ...)"}
    ollama_down = {"enabled": True, "usable": True, "kind": "ollama", "state": "down", "local": True,
                   "last_error": "Cannot connect to host 127.0.0.1:11434 ssl:default"}
    ollama_empty = {"enabled": True, "usable": True, "kind": "ollama", "state": "up", "local": True, "models": []}
    ollama_ready = {**ollama_empty, "models": ["llama3.2:latest"]}
    steps = get_started({"providers": {"ollama": ollama_down, "openai": no_key}}, ollama_installed=True)
    assert [s.action for s in steps] == [START_OLLAMA, OPEN_KEYS]
    assert "not running" in steps[0].text and steps[0].button == "Start Ollama"
    steps = get_started({"providers": {"ollama": ollama_down, "openai": no_key}}, ollama_installed=False)
    assert "ollama.com" in steps[0].text and steps[0].action == ""
    steps = get_started({"providers": {"ollama": ollama_empty}}, ollama_installed=True)
    assert steps[0].text.endswith("ollama pull llama3.2")
    assert get_started({"providers": {"ollama": ollama_ready, "openai": no_key}}, ollama_installed=True) == []
    assert all("Cannot" not in s.text for s in get_started({"providers": {"ollama": ollama_down}}, True))


def test_one_cost_format() -> None:
    from app.dashboard import money

    assert [money(v) for v in (0, 0.00004, 0.0006, 0.00125, 0.042, 0.5, 1.25, 1234.5)] == [
        "$0", "<$0.0001", "$0.0006", "$0.0013", "$0.042", "$0.5", "$1.25", "$1,234.50"]


def test_provider_detail_shows_control_characters_instead_of_acting_on_them() -> None:
    from app.state import provider_detail

    hostile = {"last_error": "refused\x1b[2J\u202egnp.exe\x00 ok\nline two"}
    shown = provider_detail(hostile)
    assert "\x1b" not in shown and "\u202e" not in shown and "\x00" not in shown
    assert "␛[2J" in shown and "⟨U+202E⟩" in shown and "␀" in shown and "\nline two" in shown
    assert provider_detail({"reason": "x" * 600}) == "x" * 500 + "…"


def test_tooltips_of_untrusted_text_cannot_be_read_as_html() -> None:
    from app.rich_text import plain_tip

    tip = plain_tip("<img src='http://evil/x'><b>ok</b>\x1b[2J\nline & two")
    assert tip.startswith("<p style='white-space:pre-wrap'>") and tip.endswith("</p>")
    inner = tip.removeprefix("<p style='white-space:pre-wrap'>").removesuffix("</p>")
    assert "<" not in inner and "&lt;img src=&#x27;http://evil/x&#x27;&gt;&lt;b&gt;ok" in inner
    assert "␛[2J\nline &amp; two" in inner
    assert plain_tip("") == ""


def test_the_tray_tooltip_is_escaped_where_the_host_reads_markup(qtbot: QtBot) -> None:
    """On X11 (XEmbed's QToolTip, an SNI host) a provider's error text is shown, not obeyed;
    on Windows and macOS, where the tooltip is plain text, it is left as written."""
    from PySide6.QtGui import Qt, QTextDocument  # QtGui's Qt has mightBeRichText

    from app.tray import RICH_TOOLTIPS, tray_tip

    hostile = "OMEN Local: Degraded\nollama: <img src='http://evil/x'><a href='x'>update</a>\x1b[2J & more"
    shown = "OMEN Local: Degraded\nollama: <img src='http://evil/x'><a href='x'>update</a>␛[2J & more"
    rich = tray_tip(hostile, rich=True)
    assert "<img" not in rich and "<a " not in rich and "\x1b" not in rich
    assert Qt.mightBeRichText(rich)  # so the host parses it, and finds only text
    doc = QTextDocument()
    doc.setHtml(rich)
    assert doc.toPlainText() == shown  # the line break kept, the escape made visible
    plain = tray_tip(hostile, rich=False)
    assert plain == shown
    assert RICH_TOOLTIPS == (__import__("sys").platform not in ("win32", "darwin"))


def test_a_relay_takes_no_posts_once_closed_or_deleted(qtbot: QtBot) -> None:
    """A worker finishing after its app quit (the Settings worker is shared) posts to a Relay
    whose QObject is going away: nothing is emitted (that crashed the suite, not raised)."""
    import shiboken6
    from PySide6.QtCore import QCoreApplication

    from app.bridge import Relay

    got: list[int] = []
    live = Relay()
    live.post(got.append, 1)
    qtbot.waitUntil(lambda: got == [1])
    live.close()
    live.post(got.append, 2)
    QCoreApplication.processEvents()
    gone = Relay()
    shiboken6.delete(gone)
    gone.post(got.append, 3)  # no emit on a deleted QObject, no exception
    QCoreApplication.processEvents()
    assert got == [1]
