"""Ending asyncio subprocesses without the two traps of CPython 3.11's asyncio.

- `Process.kill()` polls first, and that poll reaps a child that has just exited, so the
  child watcher then reports exit code 255: only kill a process we are abandoning.
- `Process.wait()` returns only once the pipes are closed, so a killed process's
  unread stdout must be drained or the wait can hang.
"""

from __future__ import annotations

import asyncio
import contextlib


async def finish(proc: asyncio.subprocess.Process, *, kill: bool) -> int:
    """Wait for `proc` (killing it first when `kill`), draining its stdout; its exit code."""
    if kill and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    if proc.stdout is not None:
        with contextlib.suppress(Exception):
            while await proc.stdout.read(1 << 16):
                pass
    return await proc.wait()
