"""Light or dark, following the system palette; the colours every window and chart draws with.

The dashboard's style sheet and pyqtgraph's background and pens are built from one
:class:`Theme`, chosen by the palette's window colour (dark when its lightness is below
half), so both system themes read well. ``OMEN_APP_THEME=dark|light`` overrides the
system (the Fusion style with a matching palette): for desktops that do not tell Qt
their theme (a bare X session), and for the screenshots in docs/.

Provider colours are stable: the same provider has the same colour in every run, on
every chart and in docs/screenshots (well-known providers fixed, others by a hash).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from PySide6.QtGui import QColor, QGuiApplication, QPalette

KNOWN_PROVIDERS = {"ollama": "#2e9d5b", "openai": "#3b6fd8", "anthropic": "#d9822b", "lmstudio": "#8e5bd0"}
PALETTE = ("#1fa5b8", "#c2458a", "#7a8b1f", "#5c6bc0", "#b5651d", "#3f9c8e", "#9c4fc6", "#d23b3b")


def provider_color(name: str) -> str:
    """One colour per provider name, the same across runs (crc32, not Python's salted hash)."""
    return KNOWN_PROVIDERS.get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


@dataclass(frozen=True, slots=True)
class Theme:
    dark: bool
    window: str
    card: str
    border: str
    text: str
    muted: str
    accent_bg: str
    accent_border: str
    warn: str
    grid_alpha: float

    def style_sheet(self) -> str:
        return f"""
QMainWindow, QWidget#central {{ background: {self.window}; }}
QFrame#card {{ background: {self.card}; border: 1px solid {self.border}; border-radius: 10px; }}
QLabel#caption {{ color: {self.muted}; font-size: 11px; text-transform: uppercase; }}
QLabel#value {{ color: {self.text}; font-size: 22px; font-weight: 600; }}
QLabel#note {{ color: {self.muted}; font-size: 11px; }}
QLabel#headline {{ font-size: 17px; font-weight: 600; color: {self.text}; }}
QLabel#endpoint {{ color: {self.muted}; font-family: monospace; }}
QLabel#detail {{ color: {self.warn}; }}
QLabel#muted {{ color: {self.muted}; }}
QFrame#getstarted {{ background: {self.accent_bg}; border: 1px solid {self.accent_border}; border-radius: 10px; }}
QFrame#getstarted QLabel {{ color: {self.text}; }}
QLabel#gs-title {{ font-size: 15px; font-weight: 600; }}
QProgressBar {{ background: {self.border}; border: none; border-radius: 3px; }}
QTabWidget::pane {{ border: 1px solid {self.border}; border-radius: 8px; background: {self.card}; top: -1px; }}
QTabBar::tab {{ padding: 6px 14px; color: {self.muted}; }}
QTabBar::tab:selected {{ color: {self.text}; font-weight: 600; }}
QTableView {{ border: none; background: {self.card}; color: {self.text}; gridline-color: {self.border};
             selection-background-color: {self.accent_bg}; selection-color: {self.text}; }}
QHeaderView::section {{ background: {self.card}; border: none; border-bottom: 1px solid {self.border};
                       padding: 4px 6px; color: {self.muted}; font-weight: 600; }}
"""


LIGHT = Theme(False, "#f6f7fb", "#ffffff", "#e1e4ec", "#1f2937", "#6b7280", "#eef4ff", "#c9d8f5", "#b45309", 0.15)
DARK = Theme(True, "#1b1e24", "#252932", "#363b46", "#e5e7eb", "#9aa3b2", "#1f2d45", "#2f4a75", "#f0a94b", 0.25)


def apply_override() -> None:
    """``OMEN_APP_THEME=dark|light``: Fusion with a matching palette (before any window exists)."""
    choice = os.environ.get("OMEN_APP_THEME", "").lower()
    if choice not in ("dark", "light"):
        return
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return
    app.setStyle("Fusion")
    t = DARK if choice == "dark" else LIGHT
    p = QPalette()
    for role, color in ((QPalette.ColorRole.Window, t.window), (QPalette.ColorRole.Base, t.card),
                        (QPalette.ColorRole.AlternateBase, t.window), (QPalette.ColorRole.Button, t.card),
                        (QPalette.ColorRole.WindowText, t.text), (QPalette.ColorRole.Text, t.text),
                        (QPalette.ColorRole.ButtonText, t.text), (QPalette.ColorRole.ToolTipBase, t.card),
                        (QPalette.ColorRole.ToolTipText, t.text), (QPalette.ColorRole.Highlight, "#3b6fd8"),
                        (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.PlaceholderText, t.muted)):
        p.setColor(role, QColor(color))
    app.setPalette(p)


def current() -> Theme:
    """The theme matching the application's palette now."""
    app = QGuiApplication.instance()
    if not isinstance(app, QGuiApplication):
        return LIGHT
    return DARK if QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128 else LIGHT
