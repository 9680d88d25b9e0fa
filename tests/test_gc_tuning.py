"""gc_tuning.settle: start-up frozen once per process, the thresholds left alone, and the
collector still collecting on its own what is made later.

Each case runs in a fresh interpreter: freezing is process-wide, and the test process's
own collector must stay as pytest set it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import gc, json, weakref
from omen_local import gc_tuning

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

default = gc.get_threshold()
before = gc.get_freeze_count()
startup_garbage = cycle()  # made before settle: garbage settle's first collection frees
first = gc_tuning.settle()
frozen = gc.get_freeze_count()
second = gc_tuning.settle()
young_runs = gc.get_stats()[0]["collections"]
later = cycle()
for _ in range(10_000):  # far past the young threshold: the collector must run unasked
    cycle()
print(json.dumps({"default": default, "before": before, "first": first, "frozen": frozen, "second": second,
                  "after_second": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "startup_garbage_frozen": startup_garbage() is not None,
                  "later_collected": later() is None,
                  "young_runs": gc.get_stats()[0]["collections"] - young_runs}))
"""


def probe() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_settle_freezes_start_up_once_and_leaves_the_thresholds() -> None:
    seen = probe()
    assert seen["before"] == 0
    assert seen["first"] is True
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 1000  # the imported modules' objects at least
    assert seen["second"] is False and seen["after_second"] == seen["frozen"]  # once per process
    assert seen["threshold"] == seen["default"]
    assert seen["startup_garbage_frozen"] is False  # collected first, not kept forever


def test_the_collector_still_runs_by_itself_after_settle() -> None:
    seen = probe()
    assert seen["later_collected"] is True  # no gc.collect() was called for it
    assert isinstance(seen["young_runs"], int) and seen["young_runs"] >= 1
