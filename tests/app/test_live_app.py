"""``omen app`` as users launch it: a real process on a real X desktop (Xvfb, openbox, trayer).

Regression tests for issue 20's blockers:
1. a provider that answers before the UI connects (its health event comes first) must not
   stop the dashboard from updating: the UI reads a state snapshot when it attaches;
2. a port already taken must show a dialog (and say so in the log), not "Starting…" forever.

What the user sees is read back two ways: the app's test-only probe (exact text of the
visible widgets, app/probe.py) and OCR of a screenshot (the words are really on screen).
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.xdesktop import (
    AppProcess,
    FakeUpstream,
    XDesktop,
    app_running,
    missing_tools,
    poll,
    write_app_config,
)
from tests.needs import required

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()) and not required(), reason=f"needs {', '.join(missing_tools())} (apt, see .ci/run)"),
    pytest.mark.timeout(180),
]


@pytest.fixture
def desktop() -> Iterator[XDesktop]:
    with XDesktop() as d:
        yield d


@pytest.fixture
def ollama() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("ollama")
    try:
        yield fake
    finally:
        fake.stop()


def serving_url(app: AppProcess) -> str:
    def found() -> str | None:
        assert app.alive(), f"omen app exited:\n{app.output[-3000:]}"
        m = re.search(r"OMEN serving at (http://127\.0\.0\.1:\d+)/v1", app.log())
        return m.group(1) if m else None

    return poll(found, 60, "OMEN to serve")


def chat(url: str, token: str) -> dict[str, Any]:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "User-Agent": "live-test/1.0"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        reply: dict[str, Any] = json.loads(resp.read())
        assert resp.headers["x-omen-provider"] == "ollama"
    return reply


def window(dump: dict[str, Any], obj: str) -> dict[str, Any] | None:
    return next((w for w in dump["windows"] if w["object"] == obj), None)


def test_dashboard_counts_requests_when_a_provider_answered_before_the_ui(
        tmp_path: Path, desktop: XDesktop, ollama: FakeUpstream) -> None:
    home = tmp_path / "home"
    config = write_app_config(tmp_path / "config.toml", tmp_path / "data", ollama.url)
    with app_running(home, config, desktop) as app:
        url = serving_url(app)
        # Ollama answered the start-up probe: its health event came before the UI attached.
        token = app.token()
        for _ in range(3):
            chat(url, token)

        def dashboard_shows_three() -> dict[str, Any] | None:
            dump = app.probe()
            dash = window(dump, "dashboard")
            if dash is None:
                return None
            rows = dash["tables"].get("recent", {}).get("rows", [])
            if any("3 attempts since start" in t for t in dash["labels"]) and len(rows) == 3:
                return dash
            return None

        dash = poll(dashboard_shows_three, 20, "the dashboard to show the 3 requests", every_s=0.5)
        log_text = app.log()
        settled = re.search(r"collector settled: \d+ start-up objects frozen", log_text)
        assert settled and settled.start() > log_text.index("OMEN serving at"), log_text[-2000:]
        header = dash["tables"]["recent"]["header"]
        provider_col = [h.lower() for h in header].index("provider")
        assert {row[provider_col] for row in dash["tables"]["recent"]["rows"]} == {"ollama"}
        assert "Running" in dash["labels"]

        # The same on the screen: raise the window, take a screenshot, read it.
        wins = desktop.windows(name="^OMEN Local$", pid=app.proc.pid)
        assert wins, "no visible 'OMEN Local' window"
        desktop.raise_window(wins[0])
        text = desktop.ocr(desktop.screenshot(tmp_path / "dashboard.png"))
        assert re.search(r"3\s+attempts\s+since\s+start", text), text
        assert "ollama" in text


def test_port_taken_shows_a_dialog_and_says_so_in_the_log(tmp_path: Path, desktop: XDesktop,
                                                          ollama: FakeUpstream) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        home = tmp_path / "home"
        config = write_app_config(tmp_path / "config.toml", tmp_path / "data", ollama.url, port=port)
        with app_running(home, config, desktop, "--minimized") as app:
            def dialog() -> list[str]:
                assert app.alive(), f"omen app exited:\n{app.output[-3000:]}"
                return desktop.windows(name="port .*in use", pid=app.proc.pid)

            wins = poll(dialog, 60, "a 'port in use' window")
            assert "in use" in desktop.title(wins[0])
            box = window(app.probe(), "port-taken")
            assert box is not None
            said = " ".join(box["labels"])
            assert f"127.0.0.1:{port}" in said and "in use" in said.lower()
            assert {"Retry", "Quit"} <= set(box["buttons"])
            assert re.search(rf"cannot listen on 127\.0\.0\.1:{port}", app.log()), app.log()[-2000:]
            assert "collector settled" not in app.log()  # only a start that serves settles the collector
            desktop.raise_window(wins[0])
            text = desktop.ocr(desktop.screenshot(tmp_path / "port.png"))
            assert re.search(r"in\s+use", text), text
            assert app.stop() == 0  # and it quits when asked: nothing hangs


def test_first_run_with_nothing_reachable_guides_in_short_words(tmp_path: Path, desktop: XDesktop) -> None:
    with socket.socket() as closed:  # an Ollama address where nothing listens
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    home = tmp_path / "home"
    config = write_app_config(tmp_path / "config.toml", tmp_path / "data", dead)
    with app_running(home, config, desktop) as app:
        serving_url(app)

        def guided() -> dict[str, Any] | None:
            dash = window(app.probe(), "dashboard")
            return dash if dash is not None and "Get started" in dash["labels"] else None

        dash = poll(guided, 30, "the Get started panel", every_s=0.5)
        said = " ".join(dash["labels"])
        assert "Ollama" in said and "ollama pull" in said
        assert "Add an API key…" in dash["buttons"]
        assert "No provider available" in dash["labels"]
        assert "ollama: not running" in dash["labels"]
        dump = app.probe()
        everything = json.dumps([dump["windows"], dump["tray"]["menu"], dump["tray"]["tooltip"]])
        for raw in ("Cannot connect", "Connect call failed", "ssl:default", "ClientConnectorError"):
            assert raw not in everything
        assert "openai — not set up — add key…" in dump["tray"]["menu"]
        width, height = dash["size"]
        assert width <= 1280 and height <= 800, dash["size"]
        wins = desktop.windows(name="^OMEN Local$", pid=app.proc.pid)
        desktop.raise_window(wins[0])
        text = desktop.ocr(desktop.screenshot(tmp_path / "first-run.png"))
        assert re.search(r"Get\s+started", text), text


ASK_EDIT = r"""
import asyncio, json, sys
import jsonschema
from glyph.app_prompter import AppPrompter
from glyph.consent import ConsentRequest
from rune.fs import TOOLS
args = {"path": "src/invoice.py", "edits": [{"old_text": "TAX = 0.19\n", "new_text": "TAX = 0.21\n"}]}
jsonschema.validate(args, next(t for t in TOOLS if t.name == "edit_file").input_schema)
req = ConsentRequest(client="Cursor/0.48", server="rune", tool="edit_file", exposed="rune__edit_file",
    arguments=args, reason="no rule allows it", paths=(sys.argv[1] + "/src/invoice.py",), destructive=True)
decision = asyncio.run(AppPrompter().ask(req))
print(json.dumps({"scope": decision.scope.value, "by": decision.by}), flush=True)
"""


def assert_a_dialog_without_maximise(desktop: XDesktop, win: str, parent: str | None = None) -> None:
    """A dialog window that asks for a title and a close button only, and that the window
    manager really may not maximise or resize. openbox keeps minimise for every dialog
    whatever the hints say (app/dialog_frame.py), so minimise is asked against, not asserted."""
    view = desktop.wm_view(win)
    flags, functions, decorations = (int(v, 16) for v in view["_MOTIF_WM_HINTS"].split(",")[:3])
    assert flags & 0b11 == 0b11, view  # functions and decorations given
    assert not functions & 0x1 and functions & 0x20 and not functions & 0x18, view  # close; no min/max
    assert not decorations & 0x1 and decorations & 0x8 and not decorations & 0x60, view  # title; no buttons
    assert view["_NET_WM_WINDOW_TYPE"].startswith("_NET_WM_WINDOW_TYPE_DIALOG"), view
    assert view["WM_TRANSIENT_FOR"], view
    if parent is not None:
        assert int(view["WM_TRANSIENT_FOR"].split("#")[-1], 16) == int(parent), view
    allowed = set(view["_NET_WM_ALLOWED_ACTIONS"].replace(" ", "").split(","))
    assert "_NET_WM_ACTION_CLOSE" in allowed and "_NET_WM_ACTION_MOVE" in allowed, view
    assert not allowed & {"_NET_WM_ACTION_MAXIMIZE_HORZ", "_NET_WM_ACTION_MAXIMIZE_VERT", "_NET_WM_ACTION_RESIZE"}, view
    before = (desktop.run("xdotool", "getwindowgeometry", "--shell", win) or "").split()
    size, state = desktop.ask_maximise(win)  # and a request to maximise it is refused
    assert "MAXIMIZED" not in state and size == " ".join(v for v in before if v.startswith(("WIDTH", "HEIGHT"))), (
        size, state, before)


def test_consent_dialog_in_plain_words_and_remember_from_its_menu(tmp_path: Path, desktop: XDesktop,
                                                                   ollama: FakeUpstream) -> None:
    """An edit_file call through the consent channel, answered with the mouse: Remember… → Always allow
    edit_file on any file."""
    import subprocess
    import sys

    from tests.app.xdesktop import ROOT

    home = tmp_path / "home"
    config = write_app_config(tmp_path / "config.toml", tmp_path / "data", ollama.url)
    with app_running(home, config, desktop, "--minimized") as app:
        serving_url(app)
        poll(lambda: (home / "run" / "omen-local" / "consent.json").exists(), 30, "the consent channel")
        asker = subprocess.Popen([sys.executable, "-c", ASK_EDIT, str(tmp_path / "proj")], env=app.env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wins = poll(lambda: desktop.windows(name="Allow edit_file", pid=app.proc.pid), 30, "the consent dialog")
            dialog = poll(lambda: window(app.probe(), "glyph-consent"), 10, "the dialog in the probe")
            assert "Cursor/0.48 wants to change 1 line in src/invoice.py" in dialog["labels"]
            assert not any("no rule allows it" in t for t in dialog["labels"])  # under "Why am I asked?"
            assert any(re.fullmatch(r"Denied automatically in \d+ s", t) for t in dialog["labels"])
            assert {"Allow once", "Deny", "Remember…", "Why am I asked?"} <= set(dialog["buttons"])
            assert_a_dialog_without_maximise(desktop, wins[0])
            desktop.raise_window(wins[0])
            text = desktop.ocr(desktop.screenshot(tmp_path / "consent.png"))
            assert re.search(r"wants\s+to\s+change\s+1\s+line", text), text

            desktop.run("xdotool", "mousemove", "--sync", *map(str, dialog["click"]["Why am I asked?"]), "click", "1")
            dialog = poll(lambda: (w := window(app.probe(), "glyph-consent")) and any(
                "no rule allows it · destructive" in t for t in w["labels"]) and w, 10, "the rule words, disclosed")
            desktop.run("xdotool", "mousemove", "--sync", *map(str, dialog["click"]["Remember…"]), "click", "1")
            always = "menu:Always allow edit_file on any file"  # Glyph remembers per tool, not per file
            menu = poll(lambda: next((w for w in app.probe()["windows"] if always in w["click"]), None),
                        10, "the Remember… menu")
            desktop.run("xdotool", "mousemove", "--sync", *map(str, menu["click"][always]), "click", "1")
            out, err = asker.communicate(timeout=30)
            assert json.loads(out) == {"scope": "always", "by": "app:user:qt"}, err
            poll(lambda: window(app.probe(), "glyph-consent") is None, 10, "the dialog to close")
        finally:
            if asker.poll() is None:
                asker.kill()
                asker.wait(10)


def test_a_client_token_is_made_in_one_dialog_and_works(tmp_path: Path, desktop: XDesktop,
                                                          ollama: FakeUpstream) -> None:
    """Tray → Settings… → Client tokens → Create token…: one dialog, the token shown once, and it works."""
    import subprocess

    from tests.app.xdesktop import omen_command

    home = tmp_path / "home"
    config = write_app_config(tmp_path / "config.toml", tmp_path / "data", ollama.url)
    with app_running(home, config, desktop, "--minimized") as app:
        url = serving_url(app)

        def click(x: int, y: int, button: int = 1) -> None:
            desktop.run("xdotool", "mousemove", "--sync", str(x), str(y), "click", str(button))

        icon = poll(lambda: app.probe()["tray"]["icon"], 20, "the tray icon on screen")
        click(icon[0], icon[1], button=3)
        items = poll(lambda: (d := app.probe())["tray"]["menu_open"] and d["tray"]["menu_items"], 10, "the tray menu")
        click(*items[next(t for t in items if t.startswith("Settings"))])
        settings = poll(lambda: window(app.probe(), "settings"), 20, "Settings")
        # Settings is a window people keep open: a normal one (minimise, maximise, close), not a dialog.
        settings_win = poll(lambda: desktop.windows(name="OMEN Local: Settings", pid=app.proc.pid), 10, "its window")[0]
        view = desktop.wm_view(settings_win)
        assert view["_NET_WM_WINDOW_TYPE"] == "_NET_WM_WINDOW_TYPE_NORMAL" and not view["WM_TRANSIENT_FOR"], view
        assert {"_NET_WM_ACTION_MINIMIZE", "_NET_WM_ACTION_MAXIMIZE_VERT", "_NET_WM_ACTION_CLOSE"} <= set(
            view["_NET_WM_ALLOWED_ACTIONS"].replace(" ", "").split(",")), view
        click(*settings["click"]["tab:Client tokens"])
        settings = poll(lambda: (w := window(app.probe(), "settings")) and "Create token…" in w["click"] and w,
                        10, "the Client tokens page")
        click(*settings["click"]["Create token…"])
        box = poll(lambda: window(app.probe(), "token-dialog"), 10, "the token dialog")
        assert {"Cancel", "Create token"} <= set(box["buttons"])
        wins = desktop.windows(name="Create a client token", pid=app.proc.pid)
        assert_a_dialog_without_maximise(desktop, wins[0], parent=settings_win)
        desktop.raise_window(wins[0])
        desktop.run("xdotool", "type", "--delay", "20", "alice")  # the user field has the focus
        desktop.run("xdotool", "key", "Tab")
        desktop.run("xdotool", "type", "--delay", "20", "acme")
        box = poll(lambda: (w := window(app.probe(), "token-dialog")) and w, 10, "the token dialog")
        click(*box["click"]["Create token"])
        shown = poll(lambda: (w := window(app.probe(), "token-dialog")) and w["fields"].get("token-value") and w,
                     20, "the new token")
        assert "The token for alice (workspace acme):" in shown["labels"] and "Copy" in shown["buttons"]
        assert any("only time the token is shown" in t for t in shown["labels"])
        token = shown["fields"]["token-value"]
        click(*shown["click"]["Copy"])
        poll(lambda: "Copied to the clipboard." in (window(app.probe(), "token-dialog") or {"labels": []})["labels"],
             10, "Copied")
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        listed = subprocess.run([*omen_command(), "token", "list", "--config", str(config)], env=app.env,
                                capture_output=True, text=True, timeout=60).stdout
        assert any("user=alice" in line and "workspace=acme" in line for line in listed.splitlines()), listed
        text = desktop.ocr(desktop.screenshot(tmp_path / "token.png"))
        assert re.search(r"only\s+time", text), text
        assert "MAXIMIZED_VERT" in desktop.ask_maximise(settings_win)[1]  # the request refused the dialogs, granted
