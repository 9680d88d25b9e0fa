"""Start at login, per OS: an XDG autostart entry, a LaunchAgent, or the HKCU Run key.

Opt-in and off by default. ``command`` is what to run (``omen-app`` or
``python -m app``); it starts the app minimised to the tray.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import sys
from pathlib import Path

ENTRY = "omen-local"
LABEL = "dev.omen-local.app"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def default_command() -> list[str]:
    return [sys.executable, "-m", "app", "--minimized"]


# ---------------------------------------------------------------- Linux (XDG autostart)


def xdg_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart" / f"{ENTRY}.desktop"


def desktop_entry(command: list[str]) -> str:
    """The .desktop file (Desktop Entry Specification; Exec quoted per its rules)."""
    def quote(arg: str) -> str:
        if any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
            return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$") + '"'
        return arg

    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=OMEN Local\n"
        "Comment=Local-first LLM router in the tray\n"
        f"Exec={' '.join(quote(a) for a in command)}\n"
        "Icon=omen-local\n"
        "Terminal=false\n"
        "Categories=Utility;Development;\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


# ---------------------------------------------------------------- macOS (LaunchAgent)


def launch_agent_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def launch_agent(command: list[str]) -> bytes:
    return plistlib.dumps({"Label": LABEL, "ProgramArguments": command, "RunAtLoad": True,
                           "ProcessType": "Interactive"})


# ---------------------------------------------------------------- the API


def is_enabled() -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                winreg.QueryValueEx(key, ENTRY)
            return True
        except OSError:
            return False
    return (launch_agent_path() if sys.platform == "darwin" else xdg_path()).exists()


def enable(command: list[str] | None = None) -> Path | str:
    """Start the app at login; returns where that is recorded."""
    command = command or default_command()
    if sys.platform == "win32":  # pragma: no cover
        import subprocess
        import winreg

        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            winreg.SetValueEx(key, ENTRY, 0, winreg.REG_SZ, subprocess.list2cmdline(command))
        return rf"HKCU\{RUN_KEY}\{ENTRY}"
    if sys.platform == "darwin":  # pragma: no cover
        path = launch_agent_path()
        data = launch_agent(command)
    else:
        path = xdg_path()
        data = desktop_entry(command).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def disable() -> None:
    if sys.platform == "win32":  # pragma: no cover
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
                winreg.DeleteValue(key, ENTRY)
        except OSError:
            pass
        return
    (launch_agent_path() if sys.platform == "darwin" else xdg_path()).unlink(missing_ok=True)


def describe(command: list[str]) -> str:
    return shlex.join(command)
