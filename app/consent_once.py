"""One consent dialog as a process: ``python -m app.consent_once`` (Glyph's "dialog" fallback).

Reads ``{"request": {...}, "timeout_s": N}`` on stdin, shows the tray app's dialog, prints
``{"scope": ..., "by": ...}``. No display, a bad request, or a closed window: a denial
(exit status 0 with a deny answer, or non-zero, which Glyph also takes as a denial).
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    try:
        data = json.loads(sys.stdin.read())
        from glyph.app_prompter import request_from_json

        request = request_from_json(data["request"])
        timeout_s = float(data.get("timeout_s", 120.0))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"consent_once: bad request: {exc}", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app.consent_dialog import ConsentDialog

    app = QApplication.instance() or QApplication(sys.argv[:1])
    dialog = ConsentDialog(request, timeout_s)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    dialog.exec()
    decision = dialog.decision
    scope, by = (decision.scope.value, decision.by) if decision else ("deny", "fail-closed:dismissed")
    print(json.dumps({"scope": scope, "by": by}), flush=True)
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
