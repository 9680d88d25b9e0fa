"""User-only folders and files for what Glyph keeps: the audit log holds what tools read and wrote.

A copy of the two helpers of omen_local/private_files.py (Glyph never imports omen_local):
folders Glyph creates are 0700, its database is created 0600 before SQLite opens it (SQLite
gives the -wal and -shm files the database's mode), and loose ones of ours are tightened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

POSIX = os.name == "posix"


def _tighten(path: Path, st: os.stat_result) -> None:
    if POSIX and st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def private_dir(path: Path) -> Path:
    """Make ``path`` (and each missing parent) 0700; tighten it if it is ours and loose."""
    missing = []
    at = Path(path)
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
    _tighten(Path(path), Path(path).stat())
    return Path(path)


def private_file(path: Path) -> Path:
    """Make ``path`` exist as a 0600 file in a private folder (never truncated)."""
    private_dir(Path(path).parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _tighten(Path(path), os.fstat(fd))
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):  # left loose by an older version
        side = Path(f"{path}{suffix}")
        if side.exists():
            _tighten(side, side.stat())
    return Path(path)
