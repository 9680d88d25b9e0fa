"""Run by test_keyring.py inside ``dbus-run-session`` with an unlocked gnome-keyring.

Starts the real app against fake upstreams, stores a key through Settings (the real
SecretService backend), tests it with one click, and prints what happened as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.pop("OMEN_SECRETS", None)  # the real keyring, not the private file

from PySide6.QtWidgets import QApplication

from app import keys
from app.controller import OmenApp, Options
from tests.app.conftest import Upstreams
from tests.conftest import write_config
from tests.fakes.fake_anthropic import DEFAULT_KEY as ANTHROPIC_KEY


def wait(app: QApplication, condition: object, timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def main() -> int:
    tmp = Path(sys.argv[1])
    qapp = QApplication([])
    out: dict[str, object] = {"backend": keys.backend().name, "backend_ok": keys.backend().ok}
    with Upstreams() as up:
        config = write_config(tmp / "config.toml", tmp / "data", up.ollama.url, up.openai.url, up.anthropic.url)
        app = OmenApp(Options(config_path=config, tray=True, minimized=True, glyph=False, consent_channel=False,
                              quit_app=False))
        app.start()
        out["ready"] = wait(qapp, lambda: app.started_ok)
        out["before"] = (app.host.status or {}).get("providers", {}).get("anthropic", {}).get("reason")
        app.open_settings()
        dialog = app.settings
        assert dialog is not None
        wait(qapp, lambda: dialog.key_rows["anthropic"]["stored"].text() != "…")
        out["stored_before"] = dialog.key_rows["anthropic"]["stored"].text()
        out["backend_label"] = dialog.backend_label.text()
        dialog.key_rows["anthropic"]["edit"].setText(ANTHROPIC_KEY)
        dialog.key_rows["anthropic"]["save"].click()
        wait(qapp, lambda: "saved and applied" in dialog.status.text())
        wait(qapp, lambda: dialog.key_rows["anthropic"]["stored"].text() != "…")  # the tab reloads
        out["stored_after"] = dialog.key_rows["anthropic"]["stored"].text()
        import keyring

        out["in_keyring"] = keyring.get_password("omen-local", "anthropic") == ANTHROPIC_KEY
        out["in_config_file"] = ANTHROPIC_KEY in config.read_text()
        wait(qapp, lambda: (app.host.status or {}).get("providers", {}).get("anthropic", {}).get("usable") is True)
        out["after"] = (app.host.status or {}).get("providers", {}).get("anthropic", {}).get("usable")
        dialog.key_rows["anthropic"]["test"].click()
        wait(qapp, lambda: dialog.key_rows["anthropic"]["result"].text().startswith(("OK", "anthropic")))
        out["test_good"] = dialog.key_rows["anthropic"]["result"].text()
        dialog.key_rows["anthropic"]["edit"].setText("sk-not-the-right-key")
        dialog.key_rows["anthropic"]["test"].click()
        wait(qapp, lambda: "refused" in dialog.key_rows["anthropic"]["result"].text())
        out["test_bad"] = dialog.key_rows["anthropic"]["result"].text()
        app.quit()
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
