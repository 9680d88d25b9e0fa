"""A stdio server whose client went away: a normal end, not a crash with a traceback.

An editor that quits closes the server's stdin and stdout, often while an answer is on its
way. Writing that answer raises ``BrokenPipeError`` inside the SDK's writer task, which
surfaces as an exception group; and at exit the interpreter's final flush of ``sys.stdout``
would raise again. :func:`client_gone` recognises the first, :func:`discard_stdout` prevents
the second (the way the Python docs recommend for SIGPIPE).
"""

from __future__ import annotations

import os
import sys


def client_gone(exc: BaseException) -> bool:
    """True when ``exc`` (every leaf of it, for a group) says the other end of a pipe closed."""
    if isinstance(exc, BaseExceptionGroup):
        return all(client_gone(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError | ConnectionResetError)


def discard_stdout() -> None:
    """Point stdout at /dev/null so nothing left in its buffer fails again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
