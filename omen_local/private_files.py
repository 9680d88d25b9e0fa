"""User-only files and folders: what OMEN keeps (usage, tokens, the audit log) is nobody else's.

With the common umask 022, every file would be 0644 and every folder 0755: another account
on the machine could read who used what, and the prompts tools wrote. So every folder OMEN
creates is 0700 and every file 0600 whatever the umask, SQLite databases are created 0600
before SQLite opens them (it gives their -wal and -shm the database's mode), and folders
left loose by older versions are tightened when OMEN starts. Only what we own is touched;
the user's own bits are kept. Windows: the user's profile folders are private by ACL, and
chmod means nothing there, so this is a no-op.

Glyph keeps its own copy (glyph/private.py): it never imports omen_local.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
POSIX = os.name == "posix"


def _tighten_one(path: Path, st: os.stat_result) -> bool:
    if not POSIX or st.st_uid != os.getuid() or not st.st_mode & 0o077:
        return False
    os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    return True


def private_dir(path: Path) -> Path:
    """``path`` as a folder only the user can enter: missing folders are made 0700 (each
    level), an existing one of ours loses its group/other bits. Parents that exist are not
    ours to change (``~/.local/share``)."""
    path = Path(path)
    missing = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            pass
    if POSIX:
        st = path.stat()
        if not _shared_by_design(path, st):
            _tighten_one(path, st)
    return path


def _shared_by_design(path: Path, st: os.stat_result) -> bool:
    """Folders a user's file may sit in that are not OMEN's to close: a sticky one (/tmp,
    where a root process tightening it broke every other account), the home folder, a root."""
    return bool(st.st_mode & stat.S_ISVTX) or path.resolve() in (Path.home().resolve(), Path(path.resolve().anchor))


def private_file(path: Path) -> Path:
    """Make ``path`` exist as a 0600 file (created empty if missing, never truncated), its
    folder private: so that whatever opens it next (SQLite, a log handler) keeps that mode."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if POSIX:
            _tighten_one(path, os.fstat(fd))
    finally:
        os.close(fd)
    return path


# What OMEN (and Glyph, by default) keep in the data dir: only these are tightened there,
# in case ``[storage] data_dir`` names a folder that holds other things too.
DATA_DIR_ENTRIES = ("usage.db", "usage.db-wal", "usage.db-shm", "usage-journal", "usage.lock", "tokens.json",
                    "secrets.json", "quotas.json", "endpoint.json", "tls", "glyph")


def tighten_data_dir(data_dir: Path) -> int:
    """Make the data dir private (created 0700 if missing) and tighten what OMEN keeps in
    it. Never the home folder or a root, whatever the config says."""
    data_dir = Path(data_dir)
    if data_dir.exists() and data_dir.resolve() in (Path.home().resolve(), Path(data_dir.anchor)):
        log.warning("data dir %s is your home or a root folder: its mode is left as it is", data_dir)
    else:
        private_dir(data_dir)
    changed = 0
    for name in DATA_DIR_ENTRIES:
        changed += tighten(data_dir / name)
    return changed


def tighten(root: Path) -> int:
    """Remove group/other bits from ``root`` and everything of ours under it (symlinks are
    not followed); return how many paths changed. For data left by older versions."""
    if not POSIX:
        return 0
    changed = 0
    root = Path(root)
    try:
        st = root.lstat()
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(st.st_mode):
        return 0
    changed += _tighten_one(root, st)
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                child = Path(dirpath) / name
                try:
                    cst = child.lstat()
                except FileNotFoundError:
                    continue
                if not stat.S_ISLNK(cst.st_mode):
                    changed += _tighten_one(child, cst)
    if changed:
        log.info("made %d file(s) and folder(s) under %s readable only by you", changed, root)
    return changed
