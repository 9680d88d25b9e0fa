"""Glyph hosted by the app (consent as a native dialog), notifications, and more of Settings."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app import glyph_settings
from app.bridge import LoopThread
from glyph.config import load_config as load_glyph
from glyph.consent import Scope
from glyph.downstream import http_transport
from omen_local.config import load_config
from tests.app.conftest import Running, Upstreams, make_config, start_app
from tests.fakes.base import Reply

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "glyph" / "fake_server.py"


def test_glyph_in_the_app_asks_with_a_native_dialog_while_omen_serves(
        qtbot: QtBot, tmp_path: Path, upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "root").mkdir()
    glyph_cfg = tmp_path / "glyph.toml"
    glyph_cfg.write_text(
        f'roots = ["{tmp_path / "root"}"]\ndata_dir = "{tmp_path / "gdata"}"\n[rune]\nenabled = false\n'
        f'[mcpServers.fake]\ncommand = "{sys.executable}"\nargs = ["{FAKE}"]\n', encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OMEN_GLYPH_PORT", str(port))
    r = start_app(qtbot, make_config(tmp_path, upstreams), glyph=True, glyph_config=glyph_cfg)
    editor = LoopThread("editor")
    editor.start()
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        results: list[types.CallToolResult] = []
        # Glyph has its own token (in its data dir, 0600), never OMEN's owner token: a client
        # cannot verify who listens on Glyph's port, so what it sends there must be worthless to OMEN.
        glyph_token = (tmp_path / "gdata" / "http-token").read_text().strip()
        assert (tmp_path / "gdata" / "http-token").stat().st_mode & 0o777 == 0o600
        assert r.app.glyph is not None and r.app.glyph.token == glyph_token != r.app.host.owner_token
        r.app.copy_endpoint()
        from PySide6.QtGui import QGuiApplication

        copied = QGuiApplication.clipboard().text()
        assert f"GLYPH_HTTP_TOKEN={glyph_token}\n" in copied
        assert r.app.host.owner_token not in copied  # OMEN's part is the endpoint file's client token
        assert f"OPENAI_API_KEY={r.app.host.client_token}\n" in copied and r.app.host.client_token

        async def call() -> None:
            transport = http_transport(url, {"Authorization": f"Bearer {glyph_token}"})
            async with Client(transport, client_info=types.Implementation(name="agent", version="3"),
                              cache=None) as client:
                results.append(await client.call_tool("fake__write_file", {"path": "a.txt", "content": "x"}))

        def glyph_up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        r.wait(glyph_up, timeout_ms=30_000)
        fut = editor.submit(call())
        r.wait(lambda: r.app.prompter.current is not None, timeout_ms=20_000)
        dialog = r.app.prompter.current
        assert dialog is not None and dialog.request.client == "agent/3"
        assert r.ask(stream=True) == "ollama"  # OMEN serves while the question is open
        qtbot.mouseClick(dialog.button(Scope.ONCE), Qt.MouseButton.LeftButton)
        r.wait(fut.done, timeout_ms=15_000)
        fut.result()
        assert not results[0].is_error
    finally:
        editor.stop()
        r.app.quit()


def test_failover_from_local_to_cloud_is_notified(running: Running, upstreams: Upstreams) -> None:
    seen: list[object] = []
    running.app.notified.connect(seen.append)
    # The fake Anthropic listens on loopback (tests reach no cloud), which OMEN counts as
    # local; the app is told it is the cloud provider it stands for.
    assert running.app.stats.local == {"ollama": True, "openai": True, "anthropic": True}
    running.app.stats.local["anthropic"] = False
    for _ in range(2):  # both local models fail
        upstreams.thread.submit(_queue(upstreams.ollama, Reply(status=500, error_message="crashed"))).result(5)
    assert running.ask() == "anthropic"
    running.wait(lambda: any(getattr(n, "title", "") == "Failover to anthropic" for n in seen))
    assert running.app.stats.failover_count == 1


async def _queue(fake: object, reply: Reply) -> None:
    fake.queue(reply)  # type: ignore[attr-defined]


def test_settings_provider_form_and_tokens(running: Running) -> None:
    running.app.open_settings()
    dialog = running.app.settings
    assert dialog is not None
    items = [dialog.provider_list.item(i).text() for i in range(dialog.provider_list.count())]
    assert items == ["ollama", "openai", "anthropic"]
    dialog.provider_list.setCurrentRow(0)  # ollama: its models are discovered
    shown = [dialog.p_models.item(r, 0).text() for r in range(dialog.p_models.rowCount())]
    assert shown and not load_config(running.config).providers["ollama"].models
    assert dialog.provider_values()["models"] == []  # shown in the table, never written to the config
    discovered = shown
    dialog.provider_list.setCurrentRow(1)  # openai
    assert dialog.p_url.text().endswith("/v1")
    row = dialog.p_models.rowCount()
    dialog.p_models.insertRow(row)
    for col, text in enumerate(("gpt-4o-mini-fast", "128000", "0.1", "0.4")):
        from PySide6.QtWidgets import QTableWidgetItem

        dialog.p_models.setItem(row, col, QTableWidgetItem(text))
    dialog._save_provider()
    running.wait(lambda: "provider openai: saved and applied" in dialog.status.text())
    spec = next(m for m in load_config(running.config).providers["openai"].models if m.name == "gpt-4o-mini-fast")
    assert spec.context_window == 128000 and spec.price is not None and spec.price.output == 0.4
    assert not load_config(running.config).providers["ollama"].models  # untouched
    assert discovered
    status = running.app.host.status
    assert status is not None and "gpt-4o-mini-fast" in status["providers"]["openai"]["models"]

    def rows() -> list[tuple[str, str, str]]:
        return [tuple(dialog.tokens.item(i, c).text() for c in range(3))  # type: ignore[misc]
                for i in range(dialog.tokens.rowCount())]

    before = len(running.app.host.service.tokens.list()) if running.app.host.service else 0
    tokens: list[str] = []
    dialog.create_token("alice", "acme", "cursor", tokens.append)
    running.wait(lambda: bool(tokens) and ("alice", "acme", "cursor") in rows())
    assert len(rows()) == before + 1
    with running.client() as c:
        c.api_key = tokens[0]
        assert c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices
    dialog.tokens.selectRow(rows().index(("alice", "acme", "cursor")))
    dialog._revoke_token()
    running.wait(lambda: ("alice", "acme", "cursor") not in rows() and "revoked 1" in dialog.status.text())


def test_glyph_roots_and_rules_are_saved_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "glyph.toml"
    path.write_text('# my glyph setup\nroots = ["/tmp"]  # scratch\n\n[consent]\nprompt_timeout_s = 60\n',
                    encoding="utf-8")
    root = tmp_path / "proj"
    root.mkdir()
    glyph_settings.save(path, [str(root)], [{"action": "allow", "server": "rune", "tool": "read_*", "path": ""},
                                            {"action": "deny", "server": "*", "tool": "*", "path": "**/.env"}])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my glyph setup") and "prompt_timeout_s = 60" in text
    config = load_glyph(path)
    assert config.roots == (root.resolve(),)
    assert [(r.action, r.server, r.tool, r.path) for r in config.rules] == [
        ("allow", "rune", "read_*", None), ("deny", "*", "*", "**/.env")]
    with pytest.raises(ValueError):
        glyph_settings.save(path, [str(root)], [{"action": "maybe"}])
    assert load_glyph(path).rules[0].action == "allow"  # unchanged


def test_glyph_host_without_a_token_does_not_serve(tmp_path: Path) -> None:
    """An empty token must not start an unauthenticated HTTP Glyph on shared loopback."""
    import threading

    from app.glyph_host import GlyphHost
    from glyph.consent import DenyPrompter

    (tmp_path / "root").mkdir()
    cfg = tmp_path / "glyph.toml"
    cfg.write_text(f'roots = ["{tmp_path / "root"}"]\ndata_dir = "{tmp_path / "gdata"}"\n[rune]\nenabled = false\n'
                   f'[mcpServers.fake]\ncommand = "{sys.executable}"\nargs = ["{FAKE}"]\n', encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    said: list[str | None] = []
    done = threading.Event()

    def ready(why: str | None) -> None:
        said.append(why)
        done.set()

    host = GlyphHost(load_glyph(cfg), DenyPrompter(), port=port, token="", on_ready=ready)
    host.start()
    try:
        assert done.wait(30)
        assert said[0] is not None and "token" in said[0]
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    finally:
        host.stop()
