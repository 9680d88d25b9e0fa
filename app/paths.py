"""Where the app keeps its per-user runtime files (instance socket, consent channel) and prefs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

from glyph.app_prompter import runtime_base
from omen_local.config import APP_NAME


def runtime_dir() -> Path:
    """A directory only this user can enter: $XDG_RUNTIME_DIR/omen-local (or a private temp dir)."""
    path = runtime_base()  # the same place Glyph looks for the consent channel
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name != "nt":
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a directory owned by this user")
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def prefs_path() -> Path:
    env = os.environ.get("OMEN_APP_PREFS")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP_NAME)) / "app.json"
