"""Frozen ``omen-app``: the Qt tray app (a GUI program: no console window on Windows)."""

from _frozen import run

run("app.main:main")
