"""OMEN Local: the router and meter behind an OpenAI-compatible front door.

This package never imports Qt: it runs headless (`omen serve`) and inside the tray
app through the same :class:`omen_local.service.OmenService`.
"""

from __future__ import annotations

__version__ = "0.1.0"
