"""How the usage journal's bytes reach one segment file: through a memory map, or a write each.

A record copied into a shared mapping costs no system call. ``os.write`` releases the GIL,
and under load the usage writer thread took it each time: the loop waited ~14 us per
record for a 1 us call: up to 5% of the throughput, about 2% typically (bench/builds.py,
docs/performance.md).

A store into a mapping cannot fail politely: if the file system has no block for the page,
the process gets SIGBUS. So a segment is mapped only where ``posix_fallocate`` really
reserves the blocks and later stores go to them in place: Linux on ext2/3/4, XFS or tmpfs
(:func:`mappable`). Copy-on-write file systems (btrfs, ZFS, APFS) allocate anew on every
write, so a full disk there would crash the process (confirmed on btrfs); they, unknown
file systems and other systems get one ``os.write`` per record, as before; so does a file
system that cannot reserve blocks after all (EOPNOTSUPP: ext2/3 under musl's libc).

A mapped segment's unwritten part is zeros, which JSON lines never hold: readers stop at
the first zero byte (:func:`records`). A finished segment is cut to its records.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import sys
from pathlib import Path
from typing import Protocol

# statfs(2) f_type of file systems whose reserved blocks are written in place.
IN_PLACE = {0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x01021994: "tmpfs"}


def fs_magic(path: Path) -> int | None:
    """The file system type (statfs ``f_type``) holding ``path``, or None if it cannot be read."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct statfs: 120 bytes on 64-bit Linux, f_type first
        if libc.statfs(os.fsencode(path), buf) != 0:
            return None
        return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    except (OSError, AttributeError, ValueError):
        return None


def mappable(directory: Path) -> bool:
    """Whether a store into a mapped, reserved file in ``directory`` can never fault."""
    return sys.platform.startswith("linux") and fs_magic(directory) in IN_PLACE


def records(path: Path) -> list[bytes]:
    """The segment's lines up to its first zero byte (the part never written)."""
    with path.open("rb") as f:
        data = f.read()
    end = data.find(0)
    return (data if end < 0 else data[:end]).splitlines(keepends=True)


class Segment(Protocol):
    used: int  # bytes of records

    def fits(self, size: int) -> bool: ...

    def put(self, line: bytes) -> None: ...

    def finish(self) -> None: ...


class Mapped:
    """A segment of ``size`` reserved bytes, written through a shared mapping."""

    def __init__(self, path: Path, size: int) -> None:
        # A name above every record on disk (Journal), so truncating loses nothing.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            self._view = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
        except BaseException:
            with contextlib.suppress(OSError):  # left empty: its name still says the next number
                os.ftruncate(fd, 0)
            os.close(fd)
            raise
        self._fd = fd
        self.used = 0

    def fits(self, size: int) -> bool:
        return self.used + size <= len(self._view)

    def put(self, line: bytes) -> None:
        end = self.used + len(line)
        self._view[self.used : end] = line
        self.used = end

    def finish(self) -> None:
        """Unmap, and cut the file to its records (readers stop at the zeros if that fails)."""
        self._view.close()
        try:
            os.ftruncate(self._fd, self.used)
        finally:
            os.close(self._fd)


class Appended:
    """A segment written with one ``os.write`` per record; full past ``size`` bytes."""

    def __init__(self, path: Path, size: int) -> None:
        # Truncated as a mapped one is: a leftover (zeros of a mapped segment, a torn line)
        # would hide the records written after it.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._size = size
        self.used = 0

    def fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self._size  # a record larger than a segment goes alone

    def put(self, line: bytes) -> None:
        written = os.write(self._fd, line)
        if written != len(line):  # the disk filled up mid-line: take the torn part back
            os.ftruncate(self._fd, self.used)
            raise OSError(errno.ENOSPC, f"short write to the usage journal ({written} of {len(line)} bytes)")
        self.used += written

    def finish(self) -> None:
        os.close(self._fd)
