"""The request log: one line per HTTP request, so a user can see what a client sent and
where it went, without bodies or keys.

``requests.log`` in the log dir (``$OMEN_LOG_DIR``, else the platform's, e.g.
``~/.local/state/omen-local/log`` on Linux), rotated by the standard library at 5 MB
(5 files kept), written from a thread (``QueueHandler``/``QueueListener``) so a slow disk
never stalls the event loop. While other requests are in flight, lines are gathered on the
loop and handed to that thread at most every :data:`FLUSH_S`: under load a hand-off per
request woke the writer thread for every line, and the GIL it took back cost the serving
loop more than formatting the lines (issue 22's profile). The last request in flight hands
its line over at once, so a quiet server's log is current as soon as it answers. Each line is ``key=value`` pairs (values with spaces or
quotes JSON-quoted; control characters escaped, since the User-Agent is the client's):

    time=2026-12-07T06:18:04.123Z door=messages status=200 client="claude-cli/2.1.332" ...

``omen logs [-f]`` prints (follows) it. ``[server] request_log = false`` turns it off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import queue
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .private_files import private_dir

APP_NAME = "omen-local"
FILE_NAME = "requests.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5
FLUSH_S = 0.1  # under load, how long a line may wait on the loop before it goes to the writer thread
FIELDS = ("time", "door", "method", "path", "status", "client", "asked", "alias", "provider", "model",
          "strategy", "latency_ms", "request_id", "ignored", "translated")  # fmt: skip
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_dir() -> Path:
    """Where OMEN's logs go (the tray app's log is in the same folder)."""
    env = os.environ.get("OMEN_LOG_DIR")
    return Path(env) if env else Path(platformdirs.user_log_dir(APP_NAME))


@dataclass(slots=True)
class RequestNote:
    """What handlers learn about a request that the log line should carry."""

    asked: str | None = None
    alias: str | None = None
    ignored: list[str] = field(default_factory=list)
    translated: list[str] = field(default_factory=list)


def _plain(text: str) -> bool:
    """Printable ASCII without a space, quote or backslash: written bare, else JSON-quoted.
    (String tests, not a regular expression: every field of every request passes here.)"""
    return text.isascii() and text.isprintable() and " " not in text and '"' not in text and "\\" not in text


def format_line(values: dict[str, object]) -> str:
    """``key=value`` pairs in FIELDS order; empty values (None, "", []) left out."""
    out: list[str] = []
    for key in FIELDS:
        raw = values.get(key)
        if raw is None:
            continue
        kind = type(raw)
        if kind is int:  # status, latency: digits
            out.append(f"{key}={raw}")
            continue
        if not raw and isinstance(raw, str | list):
            continue
        text = str(raw)
        out.append(f"{key}={text}" if _plain(text) else f"{key}={json.dumps(text)}")
    return " ".join(out)


def parse_line(line: str) -> dict[str, str]:
    """A log line back into its fields (for tests and tools)."""
    out: dict[str, str] = {}
    for key, raw in _PAIR.findall(line):
        out[key] = json.loads(raw) if raw.startswith('"') else raw
    return out


def door_of(path: str) -> str:
    for prefix, door in (("/v1/chat/completions", "chat"), ("/v1/messages", "messages"), ("/v1/responses", "responses"),
                         ("/v1/completions", "completions"), ("/v1/embeddings", "embeddings")):  # fmt: skip
        if path == prefix or path.startswith(prefix + "/"):
            return door
    return "other"


def _create_private(path: str | os.PathLike[str]) -> None:
    """Make the log file exist, user-only from the start (never truncated)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    os.close(fd)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """Rotation that leaves every file user-only (the log names clients and models).

    Made with ``delay=True``: after a rollover the handler opens the file only at the next
    record, and by then it exists, created here 0600 from the start (no moment at 0644)."""

    def doRollover(self) -> None:  # the stdlib's name
        super().doRollover()
        _create_private(self.baseFilename)


class RequestLog:
    """The file and the thread that writes it; ``write`` only keeps the line for the next hand-off."""

    def __init__(self, directory: Path | None = None, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = (directory or log_dir()) / FILE_NAME
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        # Not from logging.getLogger: an app's logger goes away with it (no registry entry per app).
        self._logger = logging.Logger("omen_local.requests")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._listener: logging.handlers.QueueListener | None = None
        self._pending: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self.in_flight = 0  # requests begun (``begin``) and not yet written

    def start(self) -> None:
        # Folders it makes are user-only, every level; an existing one (OMEN_LOG_DIR may name any) is left as it is.
        if not self.path.parent.exists():
            private_dir(self.path.parent)
        _create_private(self.path)
        handler = _PrivateRotatingFile(self.path, maxBytes=self.max_bytes, backupCount=BACKUPS, encoding="utf-8",
                                       delay=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._listener.start()

    def begin(self) -> None:
        """A request has begun; its line comes with ``write``."""
        self.in_flight += 1

    def write(self, values: dict[str, object]) -> None:
        """The line of a request that ``begin`` announced: handed over at once when no other
        request is in flight, else with the next batch."""
        self.in_flight = max(0, self.in_flight - 1)
        if self._listener is None:
            return
        self._pending.append(format_line(values))
        if self.in_flight == 0:
            self.flush()
            return
        if self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside a loop (a tool, a test): no batch to wait for
                self.flush()
                return
            self._flush_timer = loop.call_later(FLUSH_S, self.flush)

    @property
    def pending(self) -> int:
        """Lines gathered on the loop, not yet handed to the writer thread."""
        return len(self._pending)

    def flush(self) -> None:
        """Hand the gathered lines to the writer thread as one record."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._logger.info("\n".join(lines))

    def stop(self) -> None:
        self.flush()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()  # writes what is queued, then joins the thread
            for handler in listener.handlers:
                handler.close()
        self._logger.handlers.clear()


_second: list[object] = [None, ""]  # the last whole second formatted, and its text: one strftime a second


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    whole = int(t)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((t % 1) * 1000):03d}Z"


def follow(path: Path, *, lines: int = 20, forever: bool = False, poll_s: float = 0.5) -> Iterator[str]:
    """The last ``lines`` lines, then (``forever``) each new one as it is written, across rotations.

    The tail is read from the handle that is then followed, so no line falls between them."""
    handle = None
    inode = None
    try:
        handle = path.open("r", encoding="utf-8", errors="replace")
        inode = os.fstat(handle.fileno()).st_ino
        tail = handle.read().splitlines()
        yield from (tail[-lines:] if lines else [])
    except FileNotFoundError:
        pass
    if not forever:
        if handle is not None:
            handle.close()
        return
    while True:
        if handle is None:
            try:
                handle = path.open("r", encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                time.sleep(poll_s)
                continue
        line = handle.readline()
        if line:
            yield line.rstrip("\n")
            continue
        try:
            if os.stat(path).st_ino != inode:  # rotated: the rest of the old file was read; on to the new one
                handle.close()
                handle = None
                continue
        except FileNotFoundError:
            pass
        time.sleep(poll_s)
