"""The usage journal: what makes an acknowledged request's event survive ``kill -9``.

The hub listener appends each record (a UsageEvent, an AttemptStarted, an
AttemptProgress) on the serving loop, before the response or the stream's first byte
goes out, by copying its line into the open segment, a shared memory map of the file.
A killed process loses its memory, not the OS page cache, so the record is on disk;
SQLite gets it a few milliseconds later from the writer thread. Records carry a sequence
number; the store commits the highest one it has applied with each batch, and the
journal drops segments that lie wholly below it. At start, records after the committed
number are replayed. (A power cut may lose the last records: the journal is not fsynced,
which would cost a disk flush per request.)

Why a map and not ``os.write``: a write releases the GIL, and under load the writer
thread takes it each time, so the loop waited ~14 us per record for a 1 us syscall (5% of
the throughput, measured with bench/builds.py). A segment's disk blocks are reserved
when it is created (``posix_fallocate``, or zeros written where that is missing), so a
full disk shows as an error there, never as SIGBUS on a store into the map. Bytes not yet
written are zeros, which JSON lines never contain: the first zero ends a segment's
records, and a line with one is not written yet (or was cut by a crash). A finished
segment is cut to its length.

The journal is also where records wait when the writer's in-memory queue is full (SQLite
failing or slow): the writer reads them back with :meth:`Journal.read`.
"""

from __future__ import annotations

import errno
import logging
import mmap
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
_ZEROS = bytes(1 << 16)


def _records(path: Path) -> list[bytes]:
    """The segment's lines up to its first zero byte (the part never written)."""
    with path.open("rb") as f:
        data = f.read()
    end = data.find(0)
    return (data if end < 0 else data[:end]).splitlines(keepends=True)


def _reserve(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of allocated zeros, so stores into its map cannot fault."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:  # ENOSPC is the answer; a file system without it gets the zeros written
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    written = 0  # macOS and Windows have no posix_fallocate: write the zeros
    while written < size:
        written += os.write(fd, _ZEROS[: min(len(_ZEROS), size - written)])


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
        self._map: mmap.mmap | None = None
        self._size = 0  # bytes of records in the open segment
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
            for n, line in enumerate(_records(path), 1):
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
                lines = _records(path)
            except FileNotFoundError:  # released meanwhile
                continue
            for n, line in enumerate(lines, 1):
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

    def _open(self, first: int, size: int = 0) -> None:
        """Create the segment for records from ``first`` on, ``size`` bytes (at least a segment's)."""
        size = max(size, self.segment_bytes)
        path = self.dir / f"{first:020d}{_SUFFIX}"  # a name above every record on disk: truncating loses nothing
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _reserve(fd, size)
            view = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._map, self._size = fd, view, 0
        with self._lock:
            self._segments.append((first, path))

    def _finish(self) -> None:
        """Unmap the open segment and cut it to the records it holds."""
        view, fd, self._map, self._fd = self._map, self._fd, None, None  # never keep a closed one
        if view is not None:
            view.close()
        if fd is not None:
            try:
                os.ftruncate(fd, self._size)
            except OSError as exc:  # harmless: readers stop at the zeros
                log.warning("cannot trim a usage journal segment (%s)", exc)
            finally:
                os.close(fd)

    def append(self, kind: str, record: Record) -> int:
        """Copy one record into the open segment; return its sequence number. Runs on the serving loop."""
        line = orjson.dumps([self.seq + 1, kind, record], option=orjson.OPT_APPEND_NEWLINE)
        end = self._size + len(line)
        if self._map is None or end > len(self._map):  # full, or a rotation failed (ENOSPC, EMFILE): retry
            self._finish()
            self._open(self.seq + 1, len(line))
            end = len(line)
        assert self._map is not None
        self._map[self._size : end] = line
        self._size = end
        self.seq += 1
        return self.seq

    def release(self, committed: int) -> None:
        """Remove segments whose records are all at or below ``committed`` (writer thread)."""
        with self._lock:
            while len(self._segments) > 1 and self._segments[1][0] <= committed + 1:
                _, path = self._segments.pop(0)
                path.unlink(missing_ok=True)

    def close(self, committed: int) -> None:
        """Stop appending; if everything was committed, leave no segment behind."""
        self._finish()
        if committed >= self.seq:
            with self._lock:
                for _, path in self._segments:
                    path.unlink(missing_ok=True)
                self._segments.clear()
