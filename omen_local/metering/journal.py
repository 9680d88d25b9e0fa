"""The usage journal: what makes an acknowledged request's event survive ``kill -9``.

The hub listener appends each record (a UsageEvent, an AttemptStarted, an
AttemptProgress) on the serving loop, before the response or the stream's first byte
goes out: copied into the open segment's memory map, or written with one ``os.write``
where a map could fault (segment.py says which and why). A killed process loses its
memory, not the OS page cache, so the record is on disk; SQLite gets it a few
milliseconds later from the writer thread. Records carry a sequence number; the store
commits the highest one it has applied with each batch, and the journal drops segments
that lie wholly below it. At start, records after the committed number are replayed. (A
power cut may lose the last records: the journal is not fsynced, which would cost a disk
flush per request.) A clean stop leaves one empty segment named for the next number, so
that a start that cannot reach its store (a team's) goes on numbering where it stopped.

The journal is also where records wait when the writer's in-memory queue is full (SQLite
failing or slow): the writer reads them back with :meth:`Journal.read`.
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
from .segment import Appended, Mapped, Segment, mappable, records

log = logging.getLogger(__name__)

Record = UsageEvent | AttemptStarted | AttemptProgress
KIND_OF: dict[type, str] = {UsageEvent: "u", AttemptStarted: "s", AttemptProgress: "p"}
SEGMENT_BYTES = 1 << 20
_SUFFIX = ".jsonl"
UNNUMBERED = "unnumbered"  # a journal begun from nothing while its store was away (resume)

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

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES, *, mapped: bool | None = None) -> None:
        """``mapped``: write through memory maps (None: where the file system allows, segment.py)."""
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.mapped = mapped
        self.seq = 0
        self._segment: Segment | None = None  # the open one; None after a failed open (retried)
        self._started = False
        self.open_error: str | None = None  # why the first segment could not be opened (retried by append)
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
            for n, line in enumerate(records(path), 1):
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
                lines = records(path)
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

    @property
    def unnumbered(self) -> bool:
        """Whether this journal was begun without its store's numbers (resumed from nothing,
        its folder lost or new): none of its records has reached the store yet, whatever
        numbers the store holds for this instance."""
        return (self.dir / UNNUMBERED).exists()

    def numbered(self) -> None:
        """The store has this journal's records and numbers now: drop the mark."""
        try:
            (self.dir / UNNUMBERED).unlink(missing_ok=True)
        except OSError as exc:  # the next recovery ships the journal again; events are stored once
            log.warning("cannot remove the usage journal's mark (%s)", exc)

    def last_number(self) -> int:
        """The highest number used here: a record's, or one below an (empty) segment's name."""
        last = max((first - 1 for first, _ in self._existing()), default=0)
        for seq, _, _ in self.replay(0):
            last = max(last, seq)
        return last

    def start(self, next_seq: int) -> None:
        """Begin appending at ``next_seq`` (the store's numbers known); older segments must be
        committed already (they are removed)."""
        private_dir(self.dir)
        old = self._existing()
        self.seq = next_seq - 1
        self._begin()
        first = self._path(next_seq)
        if first.exists():  # the new number is on disk (a segment, or its empty file): the rest may go
            for _, path in old:
                if path != first:
                    path.unlink(missing_ok=True)
            self.numbered()

    def resume(self) -> int:
        """Begin appending after the records already here, keeping them (their store is not
        reachable yet: they are read back and released once it is); return the last seq found.
        An empty segment counts too: its name is the number after the last one used."""
        private_dir(self.dir)
        existing = self._existing()
        if not existing:  # nothing says where the numbers stand
            try:
                os.close(os.open(self.dir / UNNUMBERED, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:  # serve anyway, as with a journal that cannot open
                log.error("cannot mark the usage journal as begun anew (%s): if its folder was lost, "
                          "records numbered below the store's may be skipped", exc)
        last = self.last_number()
        with self._lock:
            self._segments = [(first, path) for first, path in existing if first <= last]
        self.seq = last
        self._begin()
        return last

    def _begin(self) -> None:
        """Open the first segment; if the disk is full, records wait in memory and each append tries again."""
        self._started = True
        if self.mapped is None:
            self.mapped = mappable(self.dir)
        try:
            self._open(self.seq + 1)
        except OSError as exc:
            self.open_error = f"{type(exc).__name__}: {exc}"
            log.warning("cannot open the usage journal (%s); records stay in memory until it can be written", exc)

    def _path(self, first: int) -> Path:
        return self.dir / f"{first:020d}{_SUFFIX}"

    def _open(self, first: int, size: int = 0) -> None:
        """Open the segment for records from ``first`` on, at least ``size`` bytes long."""
        path, size = self._path(first), max(size, self.segment_bytes)
        segment: Segment | None = None
        if self.mapped:
            try:
                segment = Mapped(path, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                log.warning("the usage journal's file system cannot reserve space (%s): segments are written, not mapped", exc)
                self.mapped = False
        self._segment = segment or Appended(path, size)
        self.open_error = None
        with self._lock:
            if self._segments and self._segments[-1][0] == first:  # reopened larger, still empty
                self._segments[-1] = (first, path)
            else:
                self._segments.append((first, path))

    def _finish(self) -> None:
        segment, self._segment = self._segment, None  # never keep a closed one
        if segment is not None:
            try:
                segment.finish()
            except OSError as exc:  # harmless: readers stop at the zeros
                log.warning("cannot trim a usage journal segment (%s)", exc)

    def append(self, kind: str, record: Record) -> int:
        """Write one record; return its sequence number. Runs on the serving loop."""
        line = orjson.dumps([self.seq + 1, kind, record], option=orjson.OPT_APPEND_NEWLINE)
        segment = self._segment
        if segment is None or not segment.fits(len(line)):  # full, or an open failed (ENOSPC, EMFILE): retry
            self._finish()
            self._open(self.seq + 1, len(line))
            segment = self._segment
            assert segment is not None
        segment.put(line)
        self.seq += 1
        return self.seq

    def release(self, committed: int) -> None:
        """Remove segments whose records are all at or below ``committed`` (writer thread)."""
        with self._lock:
            while len(self._segments) > 1 and self._segments[1][0] <= committed + 1:
                _, path = self._segments.pop(0)
                path.unlink(missing_ok=True)

    def close(self, committed: int) -> None:
        """Stop appending; if everything was committed, leave only an empty segment named
        for the next number (what :meth:`resume` goes on from)."""
        self._finish()
        if committed < self.seq or not self._started:
            return
        marker = self._path(self.seq + 1)  # the next number first, for a start without its store (resume)
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        except OSError as exc:  # the committed segments stay: their numbers say the same
            log.warning("cannot leave the usage journal's next number (%s); its segments stay", exc)
            return
        with self._lock:
            for _, path in self._segments:
                if path != marker:
                    path.unlink(missing_ok=True)
            self._segments.clear()
