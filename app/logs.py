"""The app's log: rotating files in the platform log dir (what "View logs" opens)."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

import platformdirs

from glyph.display import VisibleFormatter
from omen_local.config import APP_NAME
from omen_local.private_files import private_dir, private_file, tighten

LOG_FILE = "omen-app.log"
MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


def log_dir() -> Path:
    env = os.environ.get("OMEN_LOG_DIR")
    return Path(env) if env else Path(platformdirs.user_log_dir(APP_NAME))


def _private_rotate(source: str, dest: str) -> None:
    """Rotate as logging does, then make the new file 0600 before the handler reopens it."""
    if os.path.exists(source):
        os.replace(source, dest)
    private_file(Path(source))


def setup(level: str = "info", directory: Path | None = None) -> Path:
    """Log to ``omen-app.log`` (2 MB x 5 rotations) and stderr; return the folder."""
    folder = directory or log_dir()
    private_dir(folder)  # logs name clients, models and errors: the user's alone
    tighten(folder)
    private_file(folder / LOG_FILE)
    handler = logging.handlers.RotatingFileHandler(folder / LOG_FILE, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                   encoding="utf-8")
    handler.rotator = _private_rotate
    handler.setFormatter(VisibleFormatter(FORMAT))
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for old in [h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(VisibleFormatter(FORMAT))
        root.addHandler(console)
    for noisy in ("aiohttp.access", "mcp", "httpx", "httpx2", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return folder
