"""The audit log: every call, allowed or denied, append-only and tamper-evident.

Each row's ``hash`` is ``sha256(prev_hash + canonical JSON of the row)``, where the row
includes its own ``id`` and ``prev_hash`` and the first row's ``prev_hash`` is 64 zeros.
Editing any field of any row breaks that row's hash; deleting a row breaks the next row's
``prev_hash`` and the id sequence. Deleting rows at the *end* leaves a shorter valid chain,
so :func:`verify` also accepts a head (id and hash) recorded earlier and checks that it is
still in the chain. Every text field is redacted (``glyph.redact``) before it is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any

from glyph.db import AuditRow, Store
from glyph.redact import redact, scrub, secret_values

GENESIS = "0" * 64
HASHED_FIELDS = ("id", "ts", "kind", "client", "server", "tool", "arguments", "decision", "decided_by",
                 "outcome", "duration_us", "result_bytes", "detail", "prev_hash")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def entry_hash(fields: dict[str, Any]) -> str:
    body = {k: fields[k] for k in HASHED_FIELDS}
    return hashlib.sha256((fields["prev_hash"] + canonical_json(body)).encode("utf-8")).hexdigest()


@dataclass
class AuditEntry:
    """What to record; ``arguments`` are the real ones and get redacted on the way in."""

    kind: str = "call"
    client: str = ""
    server: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    decision: str = ""
    decided_by: str = ""
    outcome: str = ""
    duration_us: int = 0
    result_bytes: int = 0
    detail: str = ""
    ts: str = field(default_factory=now_iso)
    written: bool = field(default=False, compare=False)  # set once the row is being written: never twice


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    count: int
    head_id: int = 0
    head_hash: str = GENESIS
    bad_id: int | None = None
    problem: str = ""


TEXT_FIELDS = ("client", "server", "tool", "decision", "decided_by", "outcome", "detail")


def storable(text: str) -> str:
    """Text SQLite can store as UTF-8: a lone surrogate (from a client's JSON) is written escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def stored_fields(entry: AuditEntry) -> dict[str, Any]:
    """The row as written: every text field redacted (not only the arguments), all of it storable.

    A schema error quotes the argument it rejects and a refusal repeats the path, so
    ``detail`` and ``decided_by`` can carry a secret as easily as ``arguments`` can.
    """
    fields = {f.name: getattr(entry, f.name) for f in dataclass_fields(entry) if f.name != "written"}
    known = secret_values(entry.arguments)
    fields["arguments"] = storable(canonical_json(redact(entry.arguments, known)))
    for name in TEXT_FIELDS:
        fields[name] = storable(scrub(str(fields[name]), known))
    return fields


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, entry: AuditEntry) -> dict[str, Any]:
        return await self.store.run(self.append, entry)

    def append(self, entry: AuditEntry) -> dict[str, Any]:
        """Chain and insert one row (blocking). IMMEDIATE: other Glyph processes wait."""
        Audit = self.store.Audit
        with self.store.db.atomic("IMMEDIATE"):
            last = Audit.select(Audit.id, Audit.hash).order_by(Audit.id.desc()).first()
            fields = stored_fields(entry)
            fields["id"] = (last.id + 1) if last is not None else 1
            fields["prev_hash"] = last.hash if last is not None else GENESIS
            fields["hash"] = entry_hash(fields)
            Audit.insert(**fields).execute()
        return fields

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` rows (all when None), oldest first."""
        Audit = self.store.Audit
        query = Audit.select().order_by(Audit.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return [_as_dict(r) for r in reversed(list(query))]

    def verify(self, expect_head: tuple[int, str] | None = None, since: tuple[int, str] | None = None) -> VerifyReport:
        """Walk the chain from the first row; report the first row that does not check out.

        ``since=(id, hash)``, a head an earlier verification reported: walk only the rows
        after it (after checking that row still has that hash), so a viewer that refreshes
        often does not re-read the whole log each time. A full walk is still what proves
        that no earlier row was edited."""
        Audit = self.store.Audit
        prev, count, expected_id = GENESIS, 0, 1
        start = 0
        if since is not None and since[0] > 0:
            start, prev = since
            count, expected_id = start, start + 1
            anchor = Audit.get_or_none(Audit.id == start)
            if anchor is None or anchor.hash != prev or entry_hash(_as_dict(anchor)) != prev:
                return VerifyReport(False, 0, 0, GENESIS, start, "row differs from the verified head")
        seen_head = expect_head is None
        for row in _iterate(Audit, start):
            fields = _as_dict(row)
            if fields["id"] != expected_id:
                return VerifyReport(False, count, expected_id - 1, prev, fields["id"],
                                    f"rows {expected_id}..{fields['id'] - 1} are missing")
            if fields["prev_hash"] != prev:
                return VerifyReport(False, count, expected_id - 1, prev, fields["id"],
                                    "prev_hash does not match the previous row")
            if entry_hash(fields) != fields["hash"]:
                return VerifyReport(False, count, expected_id - 1, prev, fields["id"],
                                    "row content does not match its hash (edited)")
            if expect_head is not None and fields["id"] == expect_head[0]:
                if fields["hash"] != expect_head[1]:
                    return VerifyReport(False, count, expected_id - 1, prev, fields["id"],
                                        "row differs from the recorded head")
                seen_head = True
            prev, count, expected_id = fields["hash"], count + 1, expected_id + 1
        if not seen_head:
            assert expect_head is not None
            return VerifyReport(False, count, expected_id - 1, prev, expect_head[0],
                                f"the chain ends before the recorded head (row {expect_head[0]}): truncated")
        return VerifyReport(True, count, expected_id - 1, prev)


def _iterate(Audit: type[AuditRow], last: int = 0, batch: int = 1000) -> Iterator[AuditRow]:
    while True:
        page = list(Audit.select().where(Audit.id > last).order_by(Audit.id).limit(batch))
        if not page:
            return
        yield from page
        last = page[-1].id


def _as_dict(row: AuditRow) -> dict[str, Any]:
    return {k: getattr(row, k) for k in (*HASHED_FIELDS, "hash")}
