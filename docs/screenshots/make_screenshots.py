"""Screenshots of the real ``omen app`` process, for docs/app.md and the README.

    python docs/screenshots/make_screenshots.py          # needs the apt packages of .ci/run
    python docs/screenshots/make_screenshots.py consent  # consent.png only

Launches ``omen app`` the way users do (the console script, its own HOME, config and data)
on an X desktop of its own: Xvfb 1280x800, openbox, trayer as the tray host
(tests/app/xdesktop.py). It is driven like a person would: requests through OMEN from
other processes, clicks and right-clicks with xdotool at the places the app's test-only
probe (app/probe.py) says its buttons, tabs and menu entries are; every picture is the
screen as X shows it (ImageMagick's ``import``), never a widget rendered on the side.

Writes beside this file: first-run.png (nothing reachable), dashboard.png (after a
minute of traffic: a local model, a cloud one, a few failovers), dashboard-audit.png
(Glyph's audit tab), tray.png (the tray icon with its menu open), settings.png and
settings-keys.png, settings-team.png, consent.png (a Glyph consent request through the app's real consent
channel), dashboard-dark.png (OMEN_APP_THEME=dark). icons.png is drawn by
``python -m app.icons``-style code and is not made here.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tests.app.xdesktop import (  # noqa: E402
    AppProcess,
    FakeUpstream,
    XDesktop,
    isolated_env,
    missing_tools,
    omen_command,
    poll,
    write_app_config,
)


def chat(url: str, token: str, intent: str, agent: str) -> None:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello"}],
                       "omen": {"intent": intent}}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "User-Agent": agent})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
    except (urllib.error.URLError, OSError):
        pass


def traffic(url: str, token: str, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        intent = rng.choices(["chat", "code"], [6, 2])[0]
        chat(url, token, intent, rng.choice(["Cursor/0.48", "Continue/1.1", "aider/0.80"]))
        time.sleep(rng.uniform(0.05, 0.4))  # pacing of the pretend editors, not synchronisation


def serving_url(app: AppProcess) -> str:
    import re

    def found() -> str | None:
        if not app.alive():
            raise RuntimeError(f"omen app exited:\n{app.output[-3000:]}")
        m = re.search(r"OMEN serving at (http://127\.0\.0\.1:\d+)/v1", app.log())
        return m.group(1) if m else None

    return poll(found, 60, "OMEN to serve")


def window_of(dump: dict[str, Any], obj: str) -> dict[str, Any] | None:
    return next((w for w in dump["windows"] if w["object"] == obj), None)


class Shooter:
    def __init__(self, desktop: XDesktop, app: AppProcess) -> None:
        self.desktop = desktop
        self.app = app

    def settle(self) -> None:
        """Two probe round trips: the app's loop has run its queued paints by then."""
        self.app.probe()
        self.app.probe()

    def click(self, x: int, y: int, button: int = 1) -> None:
        self.desktop.run("xdotool", "mousemove", "--sync", str(x), str(y), "click", str(button))

    def click_in(self, obj: str, name: str) -> None:
        dump = self.app.probe()
        win = window_of(dump, obj)
        assert win is not None, f"no {obj} window"
        self.click(*win["click"][name])
        self.settle()

    def window(self, title: str, path: Path) -> None:
        wins = poll(lambda: self.desktop.windows(name=title, pid=self.app.proc.pid), 20, f"window {title!r}")
        self.desktop.raise_window(wins[0])
        self.settle()
        self.desktop.run("import", "-window", wins[0], "-frame", str(path))
        print("wrote", path.name, flush=True)

    def region(self, path: Path, x: int, y: int, w: int, h: int) -> None:
        self.desktop.run("import", "-window", "root", "-crop", f"{w}x{h}+{x}+{y}", "+repage", str(path))
        print("wrote", path.name, flush=True)


def set_key(app_env: dict[str, str], config: Path, provider: str, key: str) -> None:
    subprocess.run([*omen_command(), "key", "set", provider, "--config", str(config)], env=app_env, input=key + "\n",
                   text=True, capture_output=True, check=True, timeout=60)


def audit_log(path: Path) -> None:
    """A few Glyph audit entries, so the dashboard shows its audit tab."""
    from glyph.audit import AuditEntry, AuditLog
    from glyph.db import Store

    path.parent.mkdir(parents=True, exist_ok=True)
    with Store(path) as store:
        log = AuditLog(store)
        for client, server, tool, decision, by, outcome in (
            ("Cursor/0.48", "rune", "read_file", "allow", "policy:rule 1 (allow rune/read_*)", "ok"),
            ("Cursor/0.48", "rune", "grep", "allow", "policy:rule 1 (allow rune/grep)", "ok"),
            ("Cursor/0.48", "rune", "edit_file", "allow", "app:user:qt:once", "ok"),
            ("claude-desktop/0.9", "rune", "write_file", "deny", "app:user:qt:deny", "denied"),
            ("Continue/1.1", "rune", "git_diff", "allow", "policy:rule 2 (allow rune/git_*)", "ok"),
        ):
            log.append(AuditEntry(client=client, server=server, tool=tool, decision=decision, decided_by=by,
                                  outcome=outcome, arguments={"path": "src/app.py"}))


ASK_CONSENT = r"""
import asyncio, sys
import jsonschema
from glyph.app_prompter import AppPrompter
from glyph.consent import ConsentRequest
from rune.fs import TOOLS
spec = next(t for t in TOOLS if t.name == "edit_file")
args = {"path": "src/billing/invoice.py",
        "edits": [{"old_text": "TAX_RATE = 0.19\n", "new_text": "TAX_RATE = 0.21\n"}]}
jsonschema.validate(args, spec.input_schema)  # a call the real edit_file accepts
req = ConsentRequest(client="Cursor/0.48", server="rune", tool="edit_file", exposed="rune__edit_file",
    arguments=args, reason="no rule allows it", paths=(sys.argv[1] + "/src/billing/invoice.py",),
    destructive=True, description=spec.description)
print(asyncio.run(AppPrompter().ask(req)))
"""


def keyring_env() -> dict[str, str]:
    """Inside the dbus session main() starts: the app and `omen key set` use the real keyring."""
    import os

    addr = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    return {"DBUS_SESSION_BUS_ADDRESS": addr, "OMEN_SECRETS": "keyring"} if addr and os.environ.get(
        "OMEN_SHOTS_KEYRING") else {}


def with_keyring() -> int | None:
    """Re-run this script inside dbus-run-session with an unlocked gnome-keyring (the
    Settings shot shows a stored, masked key); None when already there or not possible."""
    import os

    if os.environ.get("OMEN_SHOTS_KEYRING") or not (shutil.which("dbus-run-session")
                                                    and shutil.which("gnome-keyring-daemon")):
        return None
    home = Path(tempfile.mkdtemp(prefix="omen-shots-home-"))
    env = {**os.environ, "OMEN_SHOTS_KEYRING": "1", "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    shell = ('echo -n screenshots | gnome-keyring-daemon --unlock --components=secrets >/dev/null && '
             f'exec "{sys.executable}" "{Path(__file__).resolve()}"')
    try:
        return subprocess.call(["dbus-run-session", "--", "sh", "-c", shell], env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def first_run(base: Path, desktop: XDesktop) -> None:
    home = base / "first"
    with __import__("socket").socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    config = write_app_config(base / "first.toml", home / "data", dead)
    app = AppProcess(home, config, desktop)
    try:
        serving_url(app)
        poll(lambda: (w := window_of(app.probe(), "dashboard")) is not None and "Get started" in w["labels"], 30,
             "the Get started panel", every_s=0.5)
        # The tray's notice ("no provider available") shows for 8 s as Qt's own balloon, which
        # Xvfb (no compositor) paints black over the window: the shot waits until it is gone.
        time.sleep(9)
        Shooter(desktop, app).window("^OMEN Local$", OUT / "first-run.png")
    finally:
        app.stop()


def with_traffic(base: Path, desktop: XDesktop, dark: bool = False) -> None:
    from tests.fakes.fake_anthropic import DEFAULT_KEY

    home = base / ("dark" if dark else "traffic")
    ollama = FakeUpstream("ollama")
    anthropic = FakeUpstream("anthropic")
    try:
        extra = f'''
[providers.anthropic]
base_url = "{anthropic.url}"
key = ["keyring:anthropic"]

[intents]
chat = ["ollama/*", "anthropic/claude-haiku-4-5"]
code = ["anthropic/claude-sonnet-4-5", "ollama/*"]

[quotas.users.owner]
daily_usd = 2
monthly_usd = 40
'''
        base.mkdir(parents=True, exist_ok=True)
        config = write_app_config(base / f"{home.name}.toml", home / "data", ollama.url, extra=extra)
        audit_log(home / ".local" / "share" / "omen-local" / "glyph" / "glyph.db")
        extra_env = {**keyring_env(), **({"OMEN_APP_THEME": "dark"} if dark else {})}
        set_key({**isolated_env(home, desktop), **extra_env}, config, "anthropic", DEFAULT_KEY)  # `omen key set`, first
        app = AppProcess(home, config, desktop, env=extra_env)
        try:
            url = serving_url(app)
            token = app.token()
            shooter = Shooter(desktop, app)
            seconds = 25 if dark else 60
            workers = [threading.Thread(target=traffic, args=(url, token, seconds, i)) for i in range(2)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            shooter.settle()
            if dark:
                shooter.window("^OMEN Local$", OUT / "dashboard-dark.png")
                return
            shooter.window("^OMEN Local$", OUT / "dashboard.png")
            dash = window_of(app.probe(), "dashboard")
            if dash is not None and "tab:Tool audit (Glyph)" in dash["click"]:
                shooter.click_in("dashboard", "tab:Tool audit (Glyph)")
                shooter.window("^OMEN Local$", OUT / "dashboard-audit.png")
                shooter.click_in("dashboard", "tab:Recent requests")
            tray(shooter)
            consent(shooter, home)
        finally:
            app.stop()
    finally:
        ollama.stop()
        anthropic.stop()


def tray(shooter: Shooter) -> None:
    dump = shooter.app.probe()
    icon = dump["tray"]["icon"]
    assert icon is not None, "the tray icon has no place on screen"
    shooter.click(icon[0], icon[1], button=3)
    opened = poll(lambda: (d := shooter.app.probe())["tray"]["menu_open"] and d, 10, "the tray menu")
    items = opened["tray"]["menu_items"]
    xs = [p[0] for p in items.values()]
    ys = [p[1] for p in items.values()]
    left = max(0, min(xs) - 260)
    shooter.region(OUT / "tray.png", left, 0, 1280 - left, min(800, max(ys) + 30))
    settings = next(text for text in items if text.startswith("Settings"))
    shooter.click(*items[settings])
    shooter.window("Settings", OUT / "settings.png")
    shooter.click_in("settings", "tab:API keys")
    shooter.window("Settings", OUT / "settings-keys.png")
    shooter.click_in("settings", "tab:Team")
    shooter.window("Settings", OUT / "settings-team.png")
    shooter.desktop.run("xdotool", "key", "Escape")


def consent(shooter: Shooter, home: Path) -> None:
    asker = subprocess.Popen([sys.executable, "-c", ASK_CONSENT, "/home/ana/work/shop"], env=shooter.app.env,
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        shooter.window("Glyph|[Aa]llow|edit_file", OUT / "consent.png")
    finally:
        asker.terminate()
        asker.wait(10)


def only_consent(base: Path, desktop: XDesktop) -> None:
    """consent.png alone (``make_screenshots.py consent``): the same app, without a minute of traffic."""
    home = base / "consent"
    ollama = FakeUpstream("ollama")
    try:
        app = AppProcess(home, write_app_config(base / "consent.toml", home / "data", ollama.url), desktop,
                         "--minimized")
        try:
            serving_url(app)
            poll(lambda: (home / "run" / "omen-local" / "consent.json").exists(), 30, "the consent channel")
            consent(Shooter(desktop, app), home)
        finally:
            app.stop()
    finally:
        ollama.stop()


def main() -> int:
    if missing_tools():
        print(f"needs {', '.join(missing_tools())} (apt; see .ci/run)", file=sys.stderr)
        return 1
    if sys.argv[1:] == ["consent"]:
        base = Path(tempfile.mkdtemp(prefix="omen-shots-"))
        try:
            with XDesktop() as desktop:
                only_consent(base, desktop)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return 0
    again = with_keyring()
    if again is not None:
        return again
    base = Path(tempfile.mkdtemp(prefix="omen-shots-"))
    try:
        with XDesktop() as desktop:
            first_run(base, desktop)
            with_traffic(base, desktop)
        with XDesktop() as desktop:
            with_traffic(base / "d", desktop, dark=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
