"""Case-insensitive roots: where ``.ENV`` *is* ``.env``, deny globs must match it too.

APFS and NTFS (by default) ignore case, so a rule ``**/.env`` written against the name a
user sees must also cover ``.ENV`` and ``sub/.eNv``, or a model walks around it by changing
case. Whether a root's file system ignores case is detected once per root
(:func:`case_insensitive`): a probe file with a lower-case name is created in the root and
its upper-case name looked up; on a read-only root an existing entry's case-swapped name is
looked up instead. A folded glob (:func:`fold_glob`) is the same glob with each letter made
a class (``.env`` -> ``.[eE][nN][vV]``): Glyph matches with it, and Rune and git (glob
pathspecs) execute it unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from pathlib import Path

PROBE_PREFIX = ".glyph-case-probe-"

_cache: dict[Path, bool] = {}
_lock = threading.Lock()


def detect(root: Path) -> bool:
    """Whether the file system holding ``root`` ignores case (uncached; touches the disk)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=root)  # mkstemp's names are lower case
    except OSError:
        return _detect_read_only(root)
    try:
        os.close(fd)
        name = os.path.basename(probe)
        return os.path.exists(os.path.join(root, name.upper()))
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def _detect_read_only(root: Path) -> bool:
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                swapped = entry.name.swapcase()
                if swapped == entry.name or swapped.swapcase() != entry.name:
                    continue  # no letters, or a name whose case does not round-trip
                try:
                    return os.path.samestat(os.lstat(os.path.join(root, swapped)), entry.stat(follow_symlinks=False))
                except OSError:
                    return False
    except OSError:
        pass
    return sys.platform in ("darwin", "win32")  # nothing to look at: the platform's default


def case_insensitive(root: Path) -> bool:
    """:func:`detect`, cached per root for the life of the process."""
    with _lock:
        hit = _cache.get(root)
    if hit is None:
        hit = detect(root)
        with _lock:
            _cache[root] = hit
    return hit


def fold_glob(pattern: str) -> str:
    """The glob matching the same names in any case: letters become ``[xX]``, classes gain their other case."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        end = pattern.find("]", i + 1) if c == "[" else -1
        if end != -1:
            body = pattern[i + 1:end]
            negate = "!" if body.startswith("!") else ""
            core = body[len(negate):]
            out.append(f"[{negate}{core}{_other_case(core)}]")
            i = end + 1
            continue
        other = c.swapcase()
        out.append(f"[{c}{other}]" if len(other) == 1 and other != c else c)
        i += 1
    return "".join(out)


def _other_case(core: str) -> str:
    """A class body's other case (ranges too: ``a-c`` gains ``A-C``), when that is a valid class."""
    swapped = core.swapcase()
    if len(swapped) != len(core) or swapped == core:
        return ""
    try:
        re.compile(f"[{swapped}]")
    except re.error:
        return ""  # e.g. "Z-a" swaps to the empty range "z-A"
    return swapped
