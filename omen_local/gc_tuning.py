"""The garbage collector's setting for a process that serves OMEN (``omen serve``, the app).

Why: CPython's full collections walk every object the process holds, and most of those
were made at start-up and live until exit (modules, the config, the catalog, Qt's
wrappers in the app). Under load such a walk is a pause of tens of milliseconds on the
serving loop: the tail of its loop lag (docs/performance.md, issue 22). :func:`settle`,
called once the service serves, exempts what start-up made from every later collection
(``gc.freeze``). The thresholds stay CPython's: collecting the young generation more
rarely did not serve requests faster and let the memory of a long soak climb (measured,
same page). A part of the app built later (a dashboard opened for the first time) is not
covered.

What is frozen is never collected, so objects alive at the call that later become cyclic
garbage stay (the start-up router a reload replaces, for one): a bounded, one-time cost,
since :func:`settle` runs once per process. Cycles made afterwards are collected as usual.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

_lock = threading.Lock()
_settled = False


def settle() -> bool:
    """Freeze the objects alive now; once per process (True if this call did it). Later calls
    do nothing, so what a restarted service makes stays collectable."""
    global _settled
    with _lock:
        if _settled:
            return False
        _settled = True
    started = time.perf_counter()
    gc.collect()  # start-up's garbage goes now, not into the frozen set
    gc.freeze()
    # CPython 3.11-3.13: resets the long-lived count, or the first full collection would wait
    # for a quarter of start-up's worth of new objects. Cheap: little is left to walk.
    gc.collect()
    log.info("collector settled: %d start-up objects frozen in %.0f ms", gc.get_freeze_count(),
             (time.perf_counter() - started) * 1000)
    return True
