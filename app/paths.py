"""Where the app keeps its per-user runtime files (instance socket, consent channel) and prefs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import platformdirs

from glyph import private
from omen_local.config import APP_NAME

log = logging.getLogger(__name__)


def runtime_dir() -> Path:
    """A directory only this user can enter: $XDG_RUNTIME_DIR/omen-local, else
    $TMPDIR/omen-local-<uid> (or -1, -2... when another user made that name first: never
    theirs, glyph/private.py), where Glyph looks for the consent channel too."""
    return private.runtime_base(create=True, warn=log.warning)


def prefs_path() -> Path:
    env = os.environ.get("OMEN_APP_PREFS")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP_NAME)) / "app.json"
