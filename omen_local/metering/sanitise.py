"""Make a usage record storable whatever its fields hold: the last line of defence.

The HTTP edge cleans what clients send, but a field the journal's encoder (orjson) or
SQLite refuses must never cost a usage event: a lone surrogate (``User-Agent: probe\\xff``
decoded with ``surrogateescape``), an integer past 64 bits, a NaN cost, a None where a
number belongs (a journal line written by an older version). :func:`clean` returns a
copy that both accept; it is only called after an encoder or the store refused a record,
so the common path pays nothing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, TypeVar

_SURROGATES = re.compile("[\ud800-\udfff]")
INT64_MAX = 2**63 - 1
REPLACEMENT = "\ufffd"

R = TypeVar("R")


def text(value: str) -> str:
    """``value`` with every lone surrogate replaced by U+FFFD (it then encodes as UTF-8)."""
    return _SURROGATES.sub(REPLACEMENT, value)


def _number(value: Any, base: str, optional: bool) -> Any:
    if value is None:
        return None if optional else (0 if base == "int" else 0.0)
    if base == "int":
        if isinstance(value, float):
            value = int(value) if math.isfinite(value) else 0
        return max(-INT64_MAX - 1, min(INT64_MAX, int(value)))
    value = float(value)
    if math.isfinite(value):
        return value
    return None if optional else 0.0


def _value(value: Any, annotation: str) -> Any:
    optional = "None" in annotation
    base = annotation.split("|")[0].strip()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return clean(value)
    if base == "bool":
        return bool(value) if value is not None or not optional else None
    if base in ("int", "float"):
        try:
            return _number(value, base, optional)
        except (TypeError, ValueError, OverflowError):
            return None if optional else (0 if base == "int" else 0.0)
    if base == "str":
        if value is None:
            return None if optional else ""
        return text(value if isinstance(value, str) else str(value))
    return value


def clean(record: R) -> R:
    """A copy of the dataclass ``record`` whose every field the journal and SQLite accept."""
    changes = {}
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        fixed = _value(value, str(f.type))
        if fixed is not value:
            changes[f.name] = fixed
    return dataclasses.replace(record, **changes) if changes else record  # type: ignore[type-var]
