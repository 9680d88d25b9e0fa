"""Item 10: without XDG_RUNTIME_DIR, another user who makes ``$TMPDIR/omen-local-<uid>`` first
must not crash the app (an uncaught PermissionError) nor plant its consent channel for Glyph.

The app and Glyph (separate processes) must agree on a folder that is the user's own, 0700:
the squatted one is skipped, with a message saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import omen_env

PROBE = (
    "import json\n"
    "from app.paths import runtime_dir\n"
    "from glyph.app_prompter import channel_file\n"
    "print(json.dumps({'app': str(runtime_dir()), 'glyph': str(channel_file())}))\n"
)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A /tmp-like folder (1777, sticky) that the attacker can write in."""
    path = Path(tempfile.mkdtemp(prefix="omen-sec-tmp-", dir="/tmp"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_runtime_dir_made_first_by_another_user_is_not_used(attacker: str, shared_tmp: Path, tmp_path: Path) -> None:
    squatted = shared_tmp / f"omen-local-{os.getuid()}"
    planted = {"version": 1, "address": "127.0.0.1:1", "secret": "attacker", "pid": 1}
    subprocess.run(["runuser", "-u", attacker, "--", "sh", "-c",
                    f"mkdir -m 777 {squatted} && printf '%s' '{json.dumps(planted)}' > {squatted}/consent.json"],
                   check=True)
    env = omen_env(tmp_path, TMPDIR=str(shared_tmp))
    env.pop("XDG_RUNTIME_DIR", None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where = json.loads(done.stdout.strip().splitlines()[-1])
    app_dir = Path(where["app"])
    assert app_dir != squatted
    st = app_dir.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    assert Path(where["glyph"]).parent == app_dir, "Glyph looks for the consent channel somewhere else than the app"
    assert "belongs to another user" in done.stderr, done.stderr


def test_the_users_own_runtime_dir_is_reused(shared_tmp: Path, tmp_path: Path) -> None:
    env = omen_env(tmp_path, TMPDIR=str(shared_tmp))
    env.pop("XDG_RUNTIME_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first == second
    assert Path(first["app"]) == shared_tmp / f"omen-local-{os.getuid()}"
