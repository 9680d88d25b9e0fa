"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

A long-running server that parses bursts of work in several threads (the usage writer's
batches, SQLite's in-memory sorts while folding rollups) leaves glibc's per-thread
arenas holding freed pages; the process's RSS then climbs in steps although nothing is
alive in them. Trimming after such bursts keeps RSS at what is really used. A no-op
where glibc is not the allocator (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time
from collections.abc import Callable

MIN_INTERVAL_S = 5.0


def _load() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _load()
_last = 0.0
_lock = threading.Lock()


def release_memory(*, force: bool = False) -> bool:
    """Trim the heap, at most every MIN_INTERVAL_S unless forced; True if it ran."""
    global _last
    if _trim is None:
        return False
    now = time.monotonic()
    with _lock:
        if not force and now - _last < MIN_INTERVAL_S:
            return False
        _last = now
    _trim(0)
    return True
