"""``bench/instructions.py`` end to end: both servers under callgrind, a count per request.

Slow (valgrind starts OMEN in about half a minute), so one small run: non-streamed
requests only. Skipped where valgrind is missing; ``.ci/run`` installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.valgrind,  # docs/development.md: the day-to-day subset leaves it out
    pytest.mark.skipif(
        shutil.which("valgrind") is None or shutil.which("callgrind_control") is None or shutil.which("taskset") is None,
        reason="needs valgrind (apt install valgrind) and taskset",
    ),
]


def test_counts_instructions_per_request_for_both_servers() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), "--requests", "30", "--case", "non-stream", "--settle", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    row = re.search(r"^non-stream c=64\s+([\d,]+)k\s+([\d,]+)k\s+([\d.]+)x$", out.stdout, re.M)
    assert row is not None, out.stdout
    thin, omen = (int(x.replace(",", "")) for x in row.group(1, 2))
    # Both did real work per request (a Python HTTP round trip is hundreds of thousands of
    # instructions), and OMEN, which forwards and also routes and meters, did more.
    assert 50 < thin < omen < 20 * thin
    assert float(row.group(3)) == pytest.approx(omen / thin, abs=0.01)
