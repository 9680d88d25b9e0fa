"""Render the tray app's screenshots for docs/app.md and the README.

    python docs/screenshots/make_screenshots.py          # needs xvfb and trayer (apt)

Runs the real app under Xvfb with trayer as the tray host, against the fake upstreams
of the test suite, sends it a minute of mixed traffic (local and cloud, a few failovers),
then writes tray.png (the panel icon and its open menu), dashboard.png, settings.png,
consent.png and icons.png (every state, and the macOS template) beside this file.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
SIZE = (1440, 960)


def start_display() -> list[subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []
    if not os.environ.get("DISPLAY"):
        display = ":93"
        procs.append(subprocess.Popen(["Xvfb", display, "-screen", "0", f"{SIZE[0]}x{SIZE[1]}x24", "-nolisten", "tcp"]))
        os.environ["DISPLAY"] = display
        time.sleep(1.0)
    if shutil.which("trayer"):
        procs.append(subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                                       "--height", "28", "--tint", "0xe8ebf2", "--transparent", "true",
                                       "--alpha", "0", "--SetDockType", "true", "--expand", "true"]))
        time.sleep(1.0)
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return procs


def with_keyring() -> int | None:
    """Re-run this script inside dbus-run-session with an unlocked gnome-keyring, so the
    Settings shot shows a stored (masked) key; None when already there or not possible."""
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


def main() -> int:
    again = with_keyring()
    if again is not None:
        return again
    procs = start_display()
    tmp = Path(tempfile.mkdtemp(prefix="omen-shots-"))
    os.environ.update(XDG_RUNTIME_DIR=str(tmp / "run"), OMEN_LOG_DIR=str(tmp / "logs"),
                      OMEN_APP_PREFS=str(tmp / "app.json"), XDG_CONFIG_HOME=str(tmp / "cfg"),
                      XDG_DATA_HOME=str(tmp / "xdg-data"))
    if not os.environ.get("OMEN_SHOTS_KEYRING"):
        os.environ["OMEN_SECRETS"] = "file"
    (tmp / "run").mkdir(mode=0o700)
    audit_log(tmp / "xdg-data" / "omen-local" / "glyph" / "glyph.db")
    try:
        return shoot(tmp)
    finally:
        for p in reversed(procs):
            p.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


def shoot(tmp: Path) -> int:
    import openai
    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtGui import QColor, QFont, QGuiApplication, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication

    from app import icons
    from app.consent_dialog import ConsentDialog
    from app.controller import OmenApp, Options
    from app.state import DEGRADED, DOWN, HEALTHY, QUOTA, STOPPED
    from glyph.consent import ConsentRequest
    from omen_local import config_edit
    from tests.app.conftest import Upstreams, make_config
    from tests.fakes.base import Reply

    qapp = QApplication([sys.argv[0]])
    qapp.setQuitOnLastWindowClosed(False)
    font = QFont("DejaVu Sans", 9)
    qapp.setFont(font)
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QWidget

    desktop = QWidget(None, Qt.WindowType.FramelessWindowHint)  # a desktop to stand the menu on
    desktop.setStyleSheet("background: qlineargradient(x1:0, y1:0, x2:1, y2:1, stop:0 #5d7fb9, stop:1 #a6b8d8);")
    desktop.setGeometry(0, 0, *SIZE)
    desktop.show()
    desktop.lower()

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            qapp.processEvents()
            time.sleep(0.01)

    with Upstreams() as up:
        up.ollama.default = Reply(text="Sure. Here is a short answer from the local model.", pieces=8,
                                  chunk_delay_s=0.03, prompt_tokens=900, completion_tokens=160)
        from tests.fakes.fake_anthropic import Reply as AnthropicReply
        from tests.fakes.fake_anthropic import Text

        up.anthropic.default = AnthropicReply(content=[Text("A careful answer from the cloud model, in parts.")],
                                              input_tokens=4000, output_tokens=500, delay=0.25, delta_delay=0.02)
        up.openai.default = Reply(text="An answer from OpenAI.", pieces=4, chunk_delay_s=0.02, delay_s=0.12,
                                  prompt_tokens=6000, completion_tokens=700)
        config = make_config(tmp, up, extra='\n[quotas.users.owner]\ndaily_usd = 2\nmonthly_usd = 40\n')
        if os.environ.get("OMEN_SHOTS_KEYRING"):
            from app import keys
            from omen_local.secrets import SecretStore
            from tests.fakes.fake_anthropic import DEFAULT_KEY

            keys.put("anthropic", DEFAULT_KEY)
            SecretStore(tmp / "data").set("openai", "sk-fake-openai-key-1234567890")
        config_edit.set_server(config, port=8765)
        app = OmenApp(Options(config_path=config, tray=True, minimized=True, glyph=False, consent_channel=False,
                              quit_app=False))
        app.start()
        end = time.monotonic() + 20
        while not app.started_ok and time.monotonic() < end:
            pump(0.05)
        if not app.started_ok:
            print("the app did not start", file=sys.stderr)
            return 1

        stop = threading.Event()

        def traffic() -> None:
            rng = random.Random(7)
            with openai.OpenAI(base_url=f"{app.url}/v1", api_key=app.host.owner_token, max_retries=0) as c:
                while not stop.is_set():
                    intent = rng.choices(["chat", "code", "cloud"], [5, 2, 2])[0]
                    if intent == "chat" and rng.random() < 0.06:
                        up.thread.submit(_queue(up.ollama, Reply(status=500, error_message="model crashed")))
                    try:
                        stream = c.chat.completions.create(
                            model="auto", stream=True, messages=[{"role": "user", "content": "hello"}],
                            extra_body={"omen": {"intent": intent}},
                            extra_headers={"User-Agent": rng.choice(["Cursor/0.48", "Continue/1.1", "aider/0.80"])})
                        for _ in stream:
                            pass
                    except openai.OpenAIError:
                        pass
                    stop.wait(rng.uniform(0.05, 0.35))

        workers = [threading.Thread(target=traffic) for _ in range(2)]
        for w in workers:
            w.start()
        pump(75)
        app.refresh_spend()
        pump(2)

        # the dashboard
        dash = app.dashboard
        dash.resize(1280, 860)
        dash.show()
        dash.move(40, 50)
        pump(2.5)
        dash.redraw(force=True)
        pump(0.5)
        dash.grab().save(str(OUT / "dashboard.png"))
        dash.tabs.setCurrentIndex(dash.tabs.count() - 1)
        pump(0.5)
        dash.grab().save(str(OUT / "dashboard-audit.png"))
        dash.tabs.setCurrentIndex(0)

        # the tray icon and its open menu
        stop.set()
        for w in workers:
            w.join()
        dash.hide()
        pump(1.0)
        tray = app.tray
        assert tray is not None
        geo = tray.icon.geometry()
        anchor = geo.bottomLeft() if geo.isValid() and geo.width() > 0 else QPoint(SIZE[0] - 40, 28)
        tray.menu.popup(anchor + QPoint(-260, 4))
        pump(1.0)
        screen = QGuiApplication.primaryScreen()
        menu_geo = tray.menu.geometry()
        region = QRect(menu_geo.left() - 40, 0, menu_geo.width() + 120, menu_geo.bottom() + 24)
        shot = screen.grabWindow(0, region.x(), region.y(), region.width(), region.height())
        shot.save(str(OUT / "tray.png"))
        tray.menu.hide()

        # settings
        app.open_settings()
        settings = app.settings
        assert settings is not None
        settings.move(60, 60)
        pump(1.5)
        settings.tabs.setCurrentIndex(1)
        pump(1.5)
        if "anthropic" in settings.key_rows:
            settings.key_rows["anthropic"]["test"].click()
            pump(1.5)
        settings.grab().save(str(OUT / "settings-keys.png"))
        settings.tabs.setCurrentIndex(0)
        pump(0.5)
        settings.grab().save(str(OUT / "settings.png"))
        settings.hide()

        # a consent dialog, as an editor's Glyph would ask
        req = ConsentRequest(
            client="Cursor/0.48", server="rune", tool="edit_file", exposed="rune__edit_file",
            arguments={"path": "src/billing/invoice.py", "old_string": "TAX_RATE = 0.19\n",
                       "new_string": "TAX_RATE = 0.21\n"},
            reason="no rule allows it", paths=(str(Path.home() / "work/shop/src/billing/invoice.py"),),
            destructive=True)
        dialog = ConsentDialog(req, timeout_s=120)
        dialog.resize(760, 520)
        dialog.show()
        pump(1.0)
        dialog.grab().save(str(OUT / "consent.png"))
        dialog.finish(dialog.decision or __import__("glyph.consent", fromlist=["Decision"]).Decision(
            __import__("glyph.consent", fromlist=["Scope"]).Scope.DENY, "screenshot"))

        # every icon state, and the macOS template
        states = (HEALTHY, DEGRADED, DOWN, QUOTA, STOPPED)
        sheet = QPixmap(120 * len(states), 230)
        sheet.fill(QColor("white"))
        p = QPainter(sheet)
        p.setFont(QFont("DejaVu Sans", 9))
        for i, state in enumerate(states):
            p.drawPixmap(120 * i + 28, 10, icons.pixmap(state, 64))
            p.drawPixmap(120 * i + 48, 84, icons.pixmap(state, 24))
            p.fillRect(120 * i + 20, 120, 80, 80, QColor("#d9dde5"))
            p.drawPixmap(120 * i + 28, 128, icons.pixmap(state, 64, template=True))
            p.drawText(QRect(120 * i, 206, 120, 20), 0x0084, state)  # AlignHCenter | AlignVCenter
        p.end()
        sheet.save(str(OUT / "icons.png"))
        app.quit()
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))
    return 0


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
            ("claude-desktop/0.9", "github", "create_issue", "deny", "fail-closed:timeout", "denied"),
            ("Continue/1.1", "rune", "git_diff", "allow", "policy:rule 2 (allow rune/git_*)", "ok"),
        ):
            log.append(AuditEntry(client=client, server=server, tool=tool, decision=decision, decided_by=by,
                                  outcome=outcome, arguments={"path": "src/app.py"}))


async def _queue(fake: object, reply: object) -> None:
    fake.queue(reply)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
