"""gc_tuning.settle: start-up frozen once per process, later cycles still collected.

Each case runs in a fresh interpreter: freezing is process-wide, and the test process's
own collector must stay as pytest set it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import gc, json, weakref
from omen_local import gc_tuning
before = gc.get_freeze_count()
first = gc_tuning.settle()
frozen = gc.get_freeze_count()
second = gc_tuning.settle()

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after start-up: only the collector frees it
gone = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": before, "first": first, "frozen": frozen, "second": second,
                  "after_second": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "cycle_collected": gone() is None}))
"""


def probe() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_settle_freezes_start_up_once_and_raises_the_young_threshold() -> None:
    from omen_local.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD

    seen = probe()
    assert seen["before"] == 0
    assert seen["first"] is True
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 1000  # the imported modules' objects at least
    assert seen["second"] is False and seen["after_second"] == seen["frozen"]  # once per process
    assert seen["threshold"] == [YOUNG_THRESHOLD, *OLDER_THRESHOLDS]


def test_cycles_made_after_settle_are_still_collected() -> None:
    assert probe()["cycle_collected"] is True
