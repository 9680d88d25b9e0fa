"""``bench/builds.py`` end to end: two builds and the thin proxy, loaded in turn, one table.

The two "builds" are this checkout twice (one with a variable only it gets), so the run
is short and needs no second virtualenv; what is checked is the plumbing: every target
answered, each build ran its own omen serve, the ratios are computed from the rounds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "builds.py"

needs_cores = pytest.mark.skipif(
    shutil.which("taskset") is None or (os.cpu_count() or 1) < 2, reason="needs taskset and two cores"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@needs_cores
def test_two_builds_and_the_proxy_in_one_table() -> None:
    out = _run("--build", f"a={ROOT}", "--build", f"b={ROOT}", "--env", "b:OMEN_BENCH_MARK=1",
               "--rounds", "2", "--duration", "0.5")  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = {
        m.group(1): m
        for m in re.finditer(
            r"^(thin|a|b)\s+(\d+)\s+(\d+)% \[([\d., ]+)\]\s+(-|[\d.]+)\s+(-|\d+)\s+(-|[\d.]+x)\s+0$", out.stdout, re.M
        )
    }
    assert set(rows) == {"thin", "a", "b"}, out.stdout
    for label in ("a", "b"):
        row = rows[label]
        assert int(row.group(2)) > 0  # it answered under load
        shares = [float(x) for x in row.group(4).split(", ")]
        assert len(shares) == 2 and all(0 < s < 5 for s in shares)
        assert row.group(6) != "-"  # CPU per request of its own process
    assert rows["a"].group(5) == "1.00"  # the first build is the yardstick of the others
    assert rows["thin"].group(3) == "100"
    assert f"b: {ROOT} " in out.stdout and "OMEN_BENCH_MARK" in out.stdout
    assert "WARNING" not in out.stdout  # every answer was a 200


def test_a_build_whose_interpreter_imports_other_code_is_refused(tmp_path: Path) -> None:
    """Each row must be the code its label names: a checkout whose interpreter finds another
    omen_local (or none) is refused before anything starts."""
    bare = tmp_path / "bare"
    (bare / "omen_local").mkdir(parents=True)  # another checkout without its own environment
    out = _run("--build", f"x={bare}")
    assert out.returncode != 0 and f"{bare} has no .venv/bin/python" in out.stderr, out.stderr
    empty = tmp_path / "empty"
    (empty / "omen_local").mkdir(parents=True)  # a checkout holding no package, with an "environment"
    (empty / ".venv" / "bin").mkdir(parents=True)
    (empty / ".venv" / "bin" / "python").symlink_to("/bin/false")
    out = _run("--build", f"x={empty}")
    assert out.returncode != 0 and f"cannot import omen_local from {empty}" in out.stderr, out.stderr
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "omen_local").mkdir(parents=True)
    (elsewhere / "omen_local" / "__init__.py").write_text("")
    (elsewhere / ".venv" / "bin").mkdir(parents=True)  # its "virtualenv" is this interpreter, which imports this checkout
    python = elsewhere / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    out = _run("--build", f"y={elsewhere}")
    import omen_local  # where this interpreter finds it

    mine = Path(omen_local.__file__).resolve().parent
    assert out.returncode != 0 and f"imports omen_local from {mine}, not from {elsewhere}" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--build", "thin=."], "expected LABEL=DIR"),
        (["--build", "noequals"], "expected LABEL=DIR"),
        (["--build", "a=/nonexistent-omen"], "is not an OMEN checkout"),
        (["--build", f"a={ROOT}", "--env", "b:X=1"], "--env names builds that are not given: b"),
        (["--build", f"a={ROOT}", "--env", "a:novalue"], "expected LABEL:NAME=VALUE"),
        (["--build", f"a={ROOT}", "--build", f"a={ROOT}"], "labels must differ"),
        (["--build", "a/b=."], "expected LABEL=DIR"),
        (["--build", f"a={ROOT}", "--rounds", "0"], "--rounds must be at least 1"),
        (["--build", f"a={ROOT}", "--omen-cpu", "1", "--load-cpu", "1"], "must differ"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: list[str], says: str) -> None:
    out = _run(*args)
    assert out.returncode != 0 and says in out.stderr, out.stderr
