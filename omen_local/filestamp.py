"""Notice that a small file another process rewrites (tokens.json, quotas.json) has changed.

One ``stat`` tells: the stamp is (inode, size, mtime, ctime). ``write_private`` replaces
the file (``os.replace``: a new inode), but a stamp can still repeat — an inode number is
reused, and file times have the file system's coarse clock (a few ms), so two rewrites
of the same size within one tick look alike. As git does for its index ("racy git"), a
file whose ctime lies within ``RACY_NS`` of the moment we read it is not trusted: it is
read again at every check until its stamp is old enough to be conclusive. ctime cannot
be set by ``os.utime``, so back-dating mtime does not hide a change either.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

Stamp = tuple[int, int, int, int]
MISSING: Stamp = (0, 0, 0, 0)
RACY_NS = 2_000_000_000  # far above any file system's timestamp granularity (FAT: 2 s)


def stamp_of(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return MISSING
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class WatchedFile:
    """Reads ``path`` when it may have changed since the last read; otherwise says so with one stat."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: Stamp | None = None
        self._racy = True

    def changed(self) -> Stamp | None:
        """The file's stamp if it may have changed since :meth:`read` (pass it there), else None."""
        stamp = stamp_of(self.path)
        return stamp if self._racy or stamp != self._seen else None

    def read(self, stamp: Stamp | None = None) -> bytes | None:
        """The file's bytes (None if it does not exist); remembers the stamp taken *before* reading,
        so a rewrite during the read is noticed at the next check."""
        if stamp is None:
            stamp = stamp_of(self.path)
        try:
            data: bytes | None = self.path.read_bytes()
        except FileNotFoundError:
            data = None
        self._seen = stamp
        self._racy = stamp != MISSING and stamp[3] >= time.time_ns() - RACY_NS
        return data
