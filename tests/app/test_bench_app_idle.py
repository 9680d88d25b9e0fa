"""``bench/app_idle.py`` as a report: it runs end to end and prints the figures.

Asserts only that each row is there with numbers (a timed assertion would fail on a busy
machine); the figures are for people, in CI's log and docs/performance.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.xdesktop import missing_tools

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())}")


def test_app_idle_bench_reports_cpu_and_rss_against_omen_serve() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "app_idle.py"), "--settle", "2", "--seconds", "5"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for name in ("omen serve", "app tray only", "app dashboard open"):
        row = re.search(rf"^{name}\s+([\d.]+)\s+(\d+)\s+", out.stdout, re.M)
        assert row is not None, out.stdout
        assert float(row.group(2)) > 10  # a real process was measured (MiB)
