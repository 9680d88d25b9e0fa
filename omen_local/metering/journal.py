"""The usage journal: what makes an acknowledged request's event survive ``kill -9``.

The hub listener appends each record (a UsageEvent, an AttemptStarted, an
AttemptProgress) with one ``os.write`` on the serving loop, before the response or the
stream's first byte goes out. A killed process loses its memory, not the OS page cache,
so the record is on disk; SQLite gets it a few milliseconds later from the writer thread.
Records carry a sequence number; the store commits the highest one it has applied with
each batch, and the journal drops segments that lie wholly below it. At start, records
after the committed number are replayed. (A power cut may lose the last records: the
journal is not fsynced, which would cost a disk flush per request.)

The journal is also where records wait when the writer's in-memory queue is full (SQLite
failing or slow): the writer reads them back with :meth:`Journal.read`. A short write
(disk full) is cut back off, so a torn line never swallows the next record.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from ..observe import AttemptProgress, AttemptStarted, UsageEvent
from ..private_files import private_dir
from ..providers.base import Usage

log = logging.getLogger(__name__)

Record = UsageEvent | AttemptStarted | AttemptProgress
KIND_OF: dict[type, str] = {UsageEvent: "u", AttemptStarted: "s", AttemptProgress: "p"}
SEGMENT_BYTES = 1 << 20
_SUFFIX = ".jsonl"


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def decode(kind: str, data: dict[str, Any]) -> Record:
    if kind == "u":
        data = dict(data, usage=_build(Usage, data.get("usage") or {}))
        return _build(UsageEvent, data)  # type: ignore[no-any-return]
    if kind == "s":
        return _build(AttemptStarted, data)  # type: ignore[no-any-return]
    if kind == "p":
        return _build(AttemptProgress, data)  # type: ignore[no-any-return]
    raise ValueError(f"unknown journal record kind {kind!r}")


class Journal:
    """Append-only segments ``<first seq>.jsonl`` in one directory; each line ``[seq, kind, record]``."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.seq = 0
        self._fd: int | None = None
        self._size = 0
        self._segments: list[tuple[int, Path]] = []  # (first seq, path), oldest first; the last is open
        self._lock = threading.Lock()  # segments list: appended on the loop, trimmed by the writer

    def _existing(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.dir.glob("*" + _SUFFIX):
            try:
                found.append((int(path.stem), path))
            except ValueError:
                continue
        return sorted(found)

    def replay(self, after: int) -> Iterator[tuple[int, str, Record]]:
        """Records with a sequence number above ``after``, oldest first; torn lines are skipped."""
        for _, path in self._existing():
            with path.open("rb") as f:
                for n, line in enumerate(f, 1):
                    try:
                        seq, kind, data = orjson.loads(line)
                        if seq > after:
                            yield seq, kind, decode(kind, data)
                    except Exception:
                        log.warning("usage journal %s line %d is unreadable (cut by a crash?); skipped", path.name, n)

    def read(self, after: int, upto: int) -> Iterator[tuple[int, str, Record]]:
        """Records with ``after < seq <= upto``, oldest first, while appends go on (the writer
        catching up). A line not fully written yet ends the read; an unreadable one is skipped."""
        segments = self._existing()
        for i, (first, path) in enumerate(segments):
            if first > upto:
                return
            if i + 1 < len(segments) and segments[i + 1][0] <= after + 1:
                continue  # wholly at or below ``after``
            try:
                f = path.open("rb")
            except FileNotFoundError:  # released meanwhile
                continue
            with f:
                for n, line in enumerate(f, 1):
                    if not line.endswith(b"\n"):
                        return
                    try:
                        seq, kind, data = orjson.loads(line)
                        if seq <= after:
                            continue
                        if seq > upto:
                            return
                        record = decode(kind, data)
                    except Exception:
                        log.warning("usage journal %s line %d is unreadable; skipped", path.name, n)
                        continue
                    yield seq, kind, record

    def start(self, next_seq: int) -> None:
        """Begin appending at ``next_seq``; older segments must be committed already (they are removed)."""
        private_dir(self.dir)
        for _, path in self._existing():
            path.unlink(missing_ok=True)
        self.seq = next_seq - 1
        self._open(next_seq)

    def resume(self) -> int:
        """Begin appending after the records already here, keeping them (their store is not
        reachable yet: they are read back and released once it is); return the last seq found."""
        self.dir.mkdir(parents=True, exist_ok=True)
        last = 0
        for seq, _, _ in self.replay(0):
            last = max(last, seq)
        existing = [(first, path) for first, path in self._existing() if first <= last]
        with self._lock:
            self._segments = existing
        self.seq = last
        self._open(last + 1)
        return last

    def _open(self, first: int) -> None:
        path = self.dir / f"{first:020d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        with self._lock:
            self._segments.append((first, path))

    def append(self, kind: str, record: Record) -> int:
        """Write one record (one syscall); return its sequence number. Runs on the serving loop."""
        if self._fd is None:  # a rotation failed to open the next segment (EMFILE, ENOSPC): retry
            self._open(self.seq + 1)
        assert self._fd is not None
        line = orjson.dumps([self.seq + 1, kind, record], option=orjson.OPT_APPEND_NEWLINE)
        written = os.write(self._fd, line)
        if written != len(line):  # the disk filled up mid-line: take the torn part back
            os.ftruncate(self._fd, self._size)
            raise OSError(errno.ENOSPC, f"short write to the usage journal ({written} of {len(line)} bytes)")
        self.seq += 1
        self._size += len(line)
        if self._size >= self.segment_bytes:
            fd, self._fd = self._fd, None  # never keep a closed descriptor: its number gets reused
            os.close(fd)
            self._open(self.seq + 1)
        return self.seq

    def release(self, committed: int) -> None:
        """Remove segments whose records are all at or below ``committed`` (writer thread)."""
        with self._lock:
            while len(self._segments) > 1 and self._segments[1][0] <= committed + 1:
                _, path = self._segments.pop(0)
                path.unlink(missing_ok=True)

    def close(self, committed: int) -> None:
        """Stop appending; if everything was committed, leave no segment behind."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if committed >= self.seq:
            with self._lock:
                for _, path in self._segments:
                    path.unlink(missing_ok=True)
                self._segments.clear()
