"""The garbage collector's settings for a process that serves OMEN (``omen serve``, the app).

Why: a routed request allocates a few hundred container objects (the parsed body, the
plan, coroutines and futures, the usage record), so CPython's default (a young collection
every 700 net allocations) runs one or more collections per request, and every hundredth
one walks the whole old generation: every object alive since start-up (modules, the
config, the catalog, prices), a pause on the serving loop that grows with the heap.
:func:`settle`, called once the service is up, freezes what start-up made (it lives as
long as the process: ``gc.freeze``, the documented way for long-running servers) and
collects the young generation less often. Cycles made later are still collected; only
the objects alive at the call are exempt (issue 22: CPU per request and loop-lag p99).
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 10_000
"""Net container allocations between young collections (CPython's default is 700): a few
dozen requests' worth, so a busy loop collects every few dozen requests, not every one."""
OLDER_THRESHOLDS = (50, 100)
"""Young collections per middle one, middle ones per full one (defaults 10 and 10): with
start-up frozen, what reaches the old generation is little, so it is walked rarely."""

_lock = threading.Lock()
_settled = False


def settle() -> bool:
    """Freeze the objects alive now and set the thresholds; once per process (True if this
    call did it). Later calls do nothing: a restarted service's objects stay collectable."""
    global _settled
    with _lock:
        if _settled:
            return False
        _settled = True
    gc.collect()  # what start-up left as garbage goes now, not into the frozen set
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    return True
