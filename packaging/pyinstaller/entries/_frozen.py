"""What every frozen entry point does before handing over to the real ``main``.

A PyInstaller bundle has no ``python``: ``sys.executable`` is the program itself. Code that
starts a sibling the way an installed package would (``sys.executable -m rune --root R``,
which is what Glyph does for Rune) must still work, so ``-m PACKAGE`` is honoured for the
project's own packages and handed to that package's command. ``omen app`` starts the
sibling GUI executable, which carries Qt and its run-time hook; the console programs don't.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

MAINS: dict[str, str] = {
    "omen_local": "omen_local.cli:main",
    "glyph": "glyph.cli:main",
    "rune": "rune.server:main",
}
GUI = "omen-app"


def _load(ref: str) -> Callable[..., int | None]:
    module, _, func = ref.partition(":")
    mod = __import__(module, fromlist=[func])
    return getattr(mod, func)  # type: ignore[no-any-return]


def sibling(name: str) -> str:
    """The path of another executable of this bundle (``.exe`` on Windows)."""
    here = os.path.dirname(os.path.abspath(sys.executable))
    return os.path.join(here, name + (".exe" if os.name == "nt" else ""))


def run(default: str) -> None:
    """Run ``default`` (``module:function``), or what ``-m PACKAGE`` / ``omen app`` asks for."""
    argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "-m":
        package = argv[1]
        if package not in MAINS:
            sys.stderr.write(f"{os.path.basename(sys.executable)}: -m {package}: not part of this bundle\n")
            raise SystemExit(2)
        sys.argv = [package, *argv[2:]]
        raise SystemExit(_load(MAINS[package])(sys.argv[1:]))
    if default == MAINS["omen_local"] and argv[:1] == ["app"]:
        gui = sibling(GUI)
        if not os.path.exists(gui):
            sys.stderr.write("omen app: this bundle was built without the tray app (omen-app)\n")
            raise SystemExit(2)
        if os.name == "nt":  # no exec on Windows: run it and pass its status on
            raise SystemExit(subprocess.call([gui, *argv[1:]]))
        os.execv(gui, [gui, *argv[1:]])
    raise SystemExit(_load(default)())
