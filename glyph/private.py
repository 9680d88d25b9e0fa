"""User-only folders and files for what Glyph keeps: the audit log holds what tools read and wrote.

A copy of the two helpers of omen_local/private_files.py (Glyph never imports omen_local):
folders Glyph creates are 0700, its database is created 0600 before SQLite opens it (SQLite
gives the -wal and -shm files the database's mode), and loose ones of ours are tightened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
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
    st = Path(path).stat()
    if not _shared_by_design(Path(path), st):
        _tighten(Path(path), st)
    return Path(path)


def _shared_by_design(path: Path, st: os.stat_result) -> bool:
    """Not Glyph's to close: a sticky folder (/tmp; root tightening it breaks every other
    account), the home folder, a root (as omen_local.private_files)."""
    return bool(st.st_mode & stat.S_ISVTX) or path.resolve() in (Path.home().resolve(), Path(path.resolve().anchor))


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


# ---------------------------------------------------------------- the runtime folder

RUNTIME_NAME = "omen-local"
FALLBACKS = 8  # $TMPDIR/omen-local-<uid>-1 .. -8 when the plain name is someone else's


def _is_mine(path: Path) -> bool | None:
    """True: a real folder of ours nobody else may write in; False: someone else's (or a
    symlink, or writable by others); None: it does not exist."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (POSIX and (st.st_uid != os.getuid() or st.st_mode & 0o022)):
        return False
    return True


def runtime_candidates() -> list[Path]:
    """Where the app's runtime folder may be, in the order the app and Glyph both try."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        return [Path(base) / RUNTIME_NAME]
    if os.name == "nt":  # pragma: no cover
        import tempfile

        return [Path(os.environ.get("LOCALAPPDATA", tempfile.gettempdir())) / RUNTIME_NAME / "run"]
    import tempfile

    first = Path(tempfile.gettempdir()) / f"{RUNTIME_NAME}-{os.getuid()}"
    return [first, *(first.with_name(f"{first.name}-{n}") for n in range(1, FALLBACKS + 1))]


def runtime_base(*, create: bool = False, warn: Callable[[str], object] | None = None) -> Path:
    """The user's runtime folder for OMEN Local: the first candidate that is the user's own
    (0700; one of ours that others could only read is tightened). One that belongs to someone
    else is skipped (``warn`` is called with why); with ``create``, the first free name is made
    0700 (mkdir fails if another user takes it first, and the next name is tried). Without
    ``create`` (Glyph looking for the app), the first free name is returned as it is."""
    skipped = []
    for path in runtime_candidates():
        mine = _is_mine(path)
        if mine is None:
            if not create:
                return path
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:  # someone was quicker: look at what they made
                mine = _is_mine(path)
                if not mine:
                    skipped.append(path)
                    continue
            _tighten(path, path.lstat())
            return path
        if mine:
            _tighten(path, path.lstat())
            return path
        skipped.append(path)
        if warn is not None:
            warn(f"{path} belongs to another user (or others may write in it): not used")
    if not create:
        return Path(os.devnull)  # nothing can be found under it: Glyph sees no app, asks on the terminal
    raise PermissionError(f"no private runtime folder could be made (taken by others: {', '.join(map(str, skipped))}); "
                          "set XDG_RUNTIME_DIR to a folder only you can enter")
