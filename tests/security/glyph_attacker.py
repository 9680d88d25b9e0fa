"""A second OS user for Glyph's security tests (CI runs as root; the attacker must not be)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

ATTACKER = "glyph-attacker"


def attacker() -> pwd.struct_passwd:
    """An unprivileged account, created once (useradd); skipped only where no account can be made."""
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        pass
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second OS user")
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER],
                          capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: created meanwhile by a parallel test
        raise AssertionError(f"useradd failed: {done.stderr}")
    return pwd.getpwnam(ATTACKER)


def run_as_attacker(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` (stdlib only: the system interpreter) as the attacker, from /."""
    user = attacker()
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    return subprocess.run([python, "-I", "-c", code, *args], capture_output=True, text=True, timeout=60, cwd="/",
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"})
