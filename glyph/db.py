"""Glyph's SQLite file (peewee): the audit log, remembered decisions and tool pins.

Every Glyph process (one per editor under stdio) shares the one file, so it runs in WAL
mode with a busy timeout and the audit append takes an IMMEDIATE transaction. Triggers
refuse UPDATE and DELETE on the audit table. Models are
bound per :class:`Store` (subclassed onto its database) so two stores never share a
binding, and async callers run every query on the store's single DB thread: the event loop
never waits on SQLite and the connection never changes threads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from peewee import AutoField, CharField, IntegerField, Model, SqliteDatabase, TextField

from glyph.private import private_file

T = TypeVar("T")
P = ParamSpec("P")
M = TypeVar("M", bound=Model)


class AuditRow(Model):
    """One audit entry; ``hash`` = sha256(prev_hash + canonical JSON of the other fields)."""

    id = IntegerField(primary_key=True)
    ts = CharField()
    kind = CharField()  # call | pin | change
    client = CharField(default="")
    server = CharField(default="")
    tool = CharField(default="")
    arguments = TextField(default="{}")  # canonical JSON, secrets redacted
    decision = CharField(default="")  # allow | deny
    decided_by = CharField(default="")
    outcome = CharField(default="")
    duration_us = IntegerField(default=0)
    result_bytes = IntegerField(default=0)
    detail = TextField(default="")
    prev_hash = CharField()
    hash = CharField()

    class Meta:
        table_name = "audit"


class DecisionRow(Model):
    """A remembered 'always' or 'deny always' for one server's tool."""

    id = AutoField()
    server = CharField()
    tool = CharField()
    scope = CharField()
    decided_by = CharField(default="")
    ts = CharField()

    class Meta:
        table_name = "decision"
        indexes = ((("server", "tool"), True),)


class PinRow(Model):
    """The approved definition of one tool, and a changed one waiting for approval."""

    id = AutoField()
    server = CharField()
    tool = CharField()
    hash = CharField()
    definition = TextField()
    ts = CharField()
    pending_hash = CharField(null=True)
    pending_definition = TextField(null=True)

    class Meta:
        table_name = "pin"
        indexes = ((("server", "tool"), True),)


def _bind(model: type[M], db: SqliteDatabase) -> type[M]:
    meta = type("Meta", (), {"database": db, "table_name": model._meta.table_name})
    return cast("type[M]", type(model.__name__, (model,), {"Meta": meta, "__module__": __name__}))


class Store:
    def __init__(self, path: Path) -> None:
        private_file(path)  # 0600 in a 0700 folder before SQLite opens it (glyph/private.py)
        self.path = path
        self.db = SqliteDatabase(
            str(path), pragmas={"journal_mode": "wal", "busy_timeout": 10_000, "synchronous": "normal"})
        self.Audit = _bind(AuditRow, self.db)
        self.Decision = _bind(DecisionRow, self.db)
        self.Pin = _bind(PinRow, self.db)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glyph-db")
        with self.db.connection_context():
            self.db.create_tables([self.Audit, self.Decision, self.Pin], safe=True)
            for verb in ("UPDATE", "DELETE"):  # append-only; the hash chain catches whoever drops these
                self.db.execute_sql(  # type: ignore[no-untyped-call]  # untyped in peewee's stubs
                    f"CREATE TRIGGER IF NOT EXISTS audit_no_{verb.lower()} BEFORE {verb} ON audit "
                    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking DB function on the store's thread; it completes even if cancelled."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        return await asyncio.shield(future)

    def close(self) -> None:
        self._executor.submit(self.db.close).result()
        self._executor.shutdown(wait=True)
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
