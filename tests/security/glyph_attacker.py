"""A second OS user for Glyph's security tests (CI runs as root; the attacker must not be)."""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import subprocess
import sys
import traceback

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
    """Run Python ``code`` (stdlib only) as the attacker, from /.

    With the system interpreter when there is one (the project's venv lives under /root,
    which the attacker cannot enter); otherwise in a forked child that drops to the
    attacker's uid and gid before running it.
    """
    user = attacker()
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is not None:
        return subprocess.run([python, "-I", "-c", code, *args], capture_output=True, text=True, timeout=60, cwd="/",
                              user=user.pw_uid, group=user.pw_gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"})
    return _forked(code, list(args), user)


def _forked(code: str, args: list[str], user: pwd.struct_passwd) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the attacker, run the code, report, never return into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.chdir("/")
            out = io.StringIO()
            sys.argv = ["attacker", *args]
            with contextlib.redirect_stdout(out):
                exec(compile(code, "<attacker>", "exec"), {"__name__": "__main__"})
            os.write(write_end, out.getvalue().encode())
            status = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    code_ = os.waitstatus_to_exitcode(wait_status)
    return subprocess.CompletedProcess([], code_, output if code_ == 0 else "", output if code_ else "")
