"""The team's usage store: the SQLite store's models and SQL, on PostgreSQL (peewee's PostgresqlDatabase).

One store implementation, two databases: :class:`PgUsageStore` subclasses
:class:`~omen_local.metering.store.SqliteUsageStore` and changes only what a shared,
concurrently written database needs:

- Several instances write. Each keeps its own journal, so the journal position lives
  under its own key (``journal_seq:<instance>``), every event and open stream carries its
  ``instance``, and recovery charges only this instance's cut streams.
- Exactly once: an event's ``attempt_id`` is unique, and inserts are ``ON CONFLICT DO
  NOTHING``, so a journal shipped again (PostgreSQL answered the commit but the answer was
  lost, or a crash before the position was saved) adds nothing twice.
- The fold watermark (``rolled_id``) assumes ids commit in order. With several writers,
  a transaction-scoped advisory lock serialises write transactions (one per batch, so
  contention is per batch, not per request), and the watermarks are re-read under it.
- Reads that span statements run at REPEATABLE READ, one snapshot, as SQLite's do.
- Schema migrations are numbered and applied at start under a session advisory lock,
  so two instances starting together do not race.
- A lost connection (PostgreSQL restarted or unreachable) is not a record's fault: the
  batch stays queued (and in the journal) and is retried on a new connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import peewee

from ..observe import UsageEvent
from ..secrets import write_private
from . import rollup as r
from .store import (
    _SCHEMA_LOCK,
    BACKOFF_MAX_S,
    EVENT_COLUMNS,
    MAX_QUEUE,
    MODELS,
    OPEN_COLUMNS,
    SCOPE_DAY_INDEX,
    SCOPE_DAY_WHERE,
    CubeRow,
    OpenAttemptRow,
    RollupRow,
    SqliteUsageStore,
    event_row,
    q,
    sql,
)

log = logging.getLogger(__name__)

# Advisory lock keys (64-bit, PostgreSQL's namespace is per database).
MIGRATION_LOCK = zlib.crc32(b"omen-usage-migrate")
WRITE_LOCK = zlib.crc32(b"omen-usage-write")
TEAM_KEY = "team_id"  # usage_meta's row naming these books (made once, by whichever instance opens them first)
BOOKS_FILE = "team-books.json"  # the books' id as last read, for a start while PostgreSQL is away


def _create_models(db: peewee.Database) -> None:
    """The SQLite models' tables (WITHOUT ROWID is SQLite's; flipped off under the schema lock)."""
    with _SCHEMA_LOCK:
        saved = RollupRow._meta.without_rowid
        RollupRow._meta.without_rowid = False
        try:
            with db.bind_ctx(MODELS):
                db.create_tables(MODELS, safe=True)
                if not CubeRow.select().exists():
                    CubeRow.insert_many(
                        [(g, c) for g in (0, 1) for c in r.CUBES], fields=[CubeRow.grain, CubeRow.cube]
                    ).execute()
        finally:
            RollupRow._meta.without_rowid = saved


def _team_columns(db: peewee.Database) -> None:
    """Who wrote each row, one row per attempt (exactly once), and the ledger's scope/day index."""
    for text in (
        "ALTER TABLE usage_event ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE usage_open_attempt ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT ''",
        "CREATE UNIQUE INDEX IF NOT EXISTS usage_event_attempt ON usage_event (attempt_id)",
        "CREATE INDEX IF NOT EXISTS usage_event_instance_time ON usage_event (instance, time)",
        f"CREATE INDEX IF NOT EXISTS {SCOPE_DAY_INDEX} ON usage_rollup ({q('user')}, workspace, period) "
        f"WHERE {SCOPE_DAY_WHERE}",
    ):
        sql(db, text)


def _team_tokens(db: peewee.Database) -> None:
    """The team's client tokens (team_tokens.py), hashed as tokens.json keeps them."""
    from ..team_tokens import CREATE_TABLE

    sql(db, CREATE_TABLE)


# Numbered migrations: each runs once, in order, in one transaction with its version bump.
MIGRATIONS: list[tuple[int, str, Callable[[peewee.Database], None]]] = [
    (1, "the usage tables (the SQLite store's models)", _create_models),
    (2, "instance columns, exactly-once events, the scope/day index", _team_columns),
    (3, "the team's client tokens", _team_tokens),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _text(v: Any) -> Any:
    """PostgreSQL's text cannot hold NUL (SQLite's can): it becomes U+FFFD, as a lone surrogate does."""
    return v.replace("\x00", "\ufffd") if isinstance(v, str) and "\x00" in v else v


def _bool(v: Any) -> Any:
    return bool(v) if isinstance(v, int) else v


_BOOL_AT = tuple(EVENT_COLUMNS.index(c) for c in ("estimated", "is_first"))


def redact(url: str) -> str:
    """A database URL without its password (for logs and status)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.username + '@' if parts.username else ''}{host}{port}{parts.path}"


IDENTITY_PARAMS = ("host", "hostaddr", "port", "dbname", "user", "service")  # libpq's, naming the database


def database_of(url: str) -> str:
    """Which database ``url`` names, without its password or options (``connect_timeout``,
    ``sslmode``...), so that a changed password or option still finds the books' id kept."""
    query = sorted((k, v) for k, v in parse_qsl(urlsplit(url).query) if k in IDENTITY_PARAMS)
    return redact(url) + ("?" + urlencode(query) if query else "")


class PgUsageStore(SqliteUsageStore):
    event_columns = (*EVENT_COLUMNS, "instance")
    open_columns = (*OPEN_COLUMNS, "instance")
    on_duplicate_event = " ON CONFLICT (attempt_id) DO NOTHING"

    def __init__(self, url: str, instance: str, data_dir: Path, *, max_queue: int = MAX_QUEUE) -> None:
        # libpq takes the whole URL as the database name (a connection string); peewee passes it through.
        db = peewee.PostgresqlDatabase(url, connect_timeout=5, application_name=f"omen {instance}"[:63])
        self.instance = instance
        self.url = redact(url)
        self.seq_key = f"journal_seq:{instance}"
        # ``path`` names the store in logs and messages; its parent receives usage-rejected.jsonl.
        super().__init__(data_dir / "team-usage", max_queue=max_queue, db=db)
        self._books_file = data_dir / BOOKS_FILE
        self._books_key = database_of(url)
        self.team_id = self._last_books()

    # ------------------------------------------------------------ what differs from SQLite

    def row(self, e: UsageEvent) -> tuple[Any, ...]:
        values = [_text(v) for v in event_row(e)]
        for i in _BOOL_AT:  # PostgreSQL's booleans do not take 0 and 1
            values[i] = _bool(values[i])
        values.append(_text(e.instance) or self.instance)  # a gateway's row: the laptop it came from
        return tuple(values)

    def open_row(self, values: list[Any]) -> Sequence[Any]:
        return [*(_text(v) for v in values), self.instance]

    def hint(self, text: str) -> str:
        return ""

    def content_error(self, exc: BaseException) -> bool:
        """A dead connection (InterfaceError, OperationalError) is the server's state, never the record's."""
        if isinstance(exc, peewee.InterfaceError | peewee.OperationalError):
            return False
        return super().content_error(exc)

    def _insert_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """One statement per page of rows (psycopg2's executemany is a round trip per row)."""
        from psycopg2.extras import execute_values  # type: ignore[import-untyped]

        head, _, _ = self._insert_event.partition(" VALUES ")
        execute_values(cur, f"{head} VALUES %s{self.on_duplicate_event}", rows, page_size=1000)

    def _begin_write(self) -> None:
        sql(self.db, "SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        self.rolled_id = self._meta("rolled_id")  # another instance may have folded
        self.last_id = sql(self.db, "SELECT COALESCE(MAX(id), 0) FROM usage_event").fetchone()[0]

    def _snapshot(self) -> Any:
        return self.db.atomic(isolation_level="REPEATABLE READ")

    def commit(self, items: list[Any]) -> int:
        try:
            if self.db.is_closed():  # keep one connection for the writer (scram auth per batch is not free)
                self.db.connect()
            return super().commit(items)
        except Exception as exc:
            if not self.content_error(exc):
                self._drop_connection()
            raise

    def _keep_connected(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The reader thread's kept connection, renewed after PostgreSQL dropped it."""
        try:
            return super()._keep_connected(fn, *args)
        except (peewee.InterfaceError, peewee.OperationalError):
            self._drop_connection()
            raise

    def unreachable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the server cannot be reached (as opposed to a bug or a bad schema)."""
        return isinstance(exc, peewee.InterfaceError | peewee.OperationalError)

    def defer_open(self, recover: Callable[[], None]) -> None:
        """PostgreSQL did not answer at start: the writer opens the store when it does, then
        runs ``recover`` (ship the journal of before this start), then takes the queue."""
        self._deferred: Callable[[], None] | None = recover

    def _run(self) -> None:
        recover = getattr(self, "_deferred", None)
        self._deferred = None
        while recover is not None:
            try:
                self.open()
                with self.hold():
                    recover()
                recover = None
                if self.state == "failing":
                    self._succeeded(0, 0, 0)
            except Exception as exc:
                self._drop_connection()
                self._failed(exc)
                if self._stopping:
                    return  # the journal keeps everything for the next start
                self._urgent.wait(self._backoff)
                self._urgent.clear()
                self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        # As the SQLite store's writer, without connecting first: PostgreSQL may be away right
        # now, and each commit attempt (re)connects as needed.
        try:
            self._work()
        except BaseException as exc:
            self._die(exc)
        finally:
            with contextlib.suppress(Exception):
                self.db.close()

    def _drop_connection(self) -> None:
        """Forget a broken connection, so that the next attempt opens a new one."""
        with contextlib.suppress(Exception):
            self.db.close()

    # ------------------------------------------------------------ lifecycle

    def open(self) -> int:
        """Apply pending migrations (under a session advisory lock); return this instance's journal position."""
        with self.db.connection_context():
            sql(self.db, "SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                self._migrate_all()
            finally:
                sql(self.db, "SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            self.team_id = self._team_id()
            self.committed = self._meta(self.seq_key)
            self.rolled_id = self._meta("rolled_id")
            self.last_id = sql(self.db, "SELECT COALESCE(MAX(id), 0) FROM usage_event").fetchone()[0]
            self._open_ids = {
                a for (a,) in sql(self.db, "SELECT attempt_id FROM usage_open_attempt WHERE instance = %s", (self.instance,))
            }
        return self.committed

    def _team_id(self) -> str:
        """The books' id: a random id the first instance to open them wrote, read by every
        other (a laptop and a team gateway compare theirs, docs/team.md); kept in the data dir
        for a start while PostgreSQL is away (:meth:`_last_books`)."""
        sql(self.db, "INSERT INTO usage_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
            (TEAM_KEY, secrets.token_hex(16)))
        books = str(sql(self.db, "SELECT value FROM usage_meta WHERE key = %s", (TEAM_KEY,)).fetchone()[0])
        if books != self.team_id:
            try:
                write_private(self._books_file, json.dumps({"database": self._books_key, "books": books}).encode())
            except OSError as exc:  # a start with PostgreSQL away will not know them: said then
                log.warning("cannot keep the team books' id in %s: %s", self._books_file, exc)
        return books

    def _last_books(self) -> str | None:
        """The books' id last read from the same database (:func:`database_of`), so that a
        start while PostgreSQL is away still names them; else None."""
        try:
            kept = json.loads(self._books_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(kept, dict) and kept.get("database") == self._books_key and isinstance(kept.get("books"), str):
            return str(kept["books"])
        return None

    def schema_version(self) -> int:
        if "usage_meta" not in self.db.get_tables():
            return 0
        return self._meta("schema_version")

    def _migrate_all(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the team's usage store has schema version {version}, newer than this OMEN knows "
                f"({SCHEMA_VERSION}): upgrade OMEN on this machine"
            )
        for number, what, step in MIGRATIONS:
            if number <= version:
                continue
            with self.db.atomic():
                step(self.db)
                self._set_meta("schema_version", number)
            log.info("team usage store %s: applied migration %d (%s)", self.url, number, what)

    def _migrate(self) -> None:  # the SQLite store's upgrades do not apply: ours are numbered
        return

    def open_attempts(self) -> list[dict[str, Any]]:
        """This instance's streams that started and never reported (others' belong to them)."""
        with self._connected():
            select = OpenAttemptRow.select().where(sql_instance(self.instance)).dicts().bind(self.db)
            return cast(list[dict[str, Any]], list(select))

    # ------------------------------------------------------------ team queries

    def by_instance(self, start: float, end: float, user: str | None) -> list[dict[str, Any]]:
        """Requests, tokens and spend per instance (and user) in [start, end), from the raw events."""
        where = [f"{q('time')} >= %s", f"{q('time')} < %s"]
        params: list[Any] = [start, end]
        if user is not None:
            where.append(f"{q('user')} = %s")
            params.append(user)
        text = (
            f"SELECT instance, {q('user')}, SUM(CASE WHEN is_first THEN 1 ELSE 0 END), COUNT(*), "
            "SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd) "
            f"FROM usage_event WHERE {' AND '.join(where)} GROUP BY instance, {q('user')} ORDER BY instance, {q('user')}"
        )
        with self.db.connection_context():
            rows = sql(self.db, text, params).fetchall()
        return [
            {
                "instance": inst,
                "user": u,
                "requests": int(req),
                "attempts": int(att),
                "prompt_tokens": int(pt or 0),
                "completion_tokens": int(ct or 0),
                "cost_usd": float(cost or 0.0),
            }
            for inst, u, req, att, pt, ct, cost in rows
        ]


def sql_instance(instance: str) -> Any:
    """``instance = ?`` on the open-attempt table (a column the shared model does not declare)."""
    return peewee.SQL("instance = %s", [instance])
