"""The usage store: raw events and rollups in SQLite (WAL) through peewee.

Writes never happen on the serving loop: the hub listener hands records to
:meth:`SqliteUsageStore.submit` (a queue put) and one writer thread commits them in
batches: after the first record it lingers ``LINGER_S`` (the journal already holds
them), then commits everything queued in one transaction: the events (``executemany``),
the open-stream table and the journal sequence number. One wake-up and one commit per
batch keeps the writer from contending for the GIL with the serving loop on every
request; :meth:`flush` (the usage API's read-your-writes) cuts the linger short.

When SQLite fails (disk full, read-only, I/O) the writer retries the same batch with a
growing pause (0.2 s to 5 s; a flush retries at once) and takes nothing new meanwhile.
The queue is bounded (``max_queue`` records): past it, records already in the journal are
not held in memory; the writer reads them back from the journal once it has caught up,
in order, so nothing acknowledged is lost and memory stays flat. (A record whose journal
write failed has no other copy: it is always queued, and admission refuses new requests
while that is so and the queue is full.) A flush fails (WriterError) if a commit attempt
fails while it waits, or if the writer is not running; it never reports stale data as
done. The writer logs once per failure episode, and :meth:`health` reports its state.
A record whose *content* SQLite refuses is cleaned, or set aside in
``usage-rejected.jsonl``, so it cannot block the rest (see :meth:`commit`).

Rollups (every dimension subset x UTC hour and day, see rollup.py) are folded in bulk:
every ``COMPACT_EVERY`` events, or after ``COMPACT_AFTER_S`` of quiet, the events past
the ``rolled_id`` watermark are aggregated once at the finest grain and then upserted
into all 32 (cube, grain) rows in one ``INSERT .. SELECT .. ON CONFLICT DO UPDATE``.
Queries read rollup rows plus the raw events past the watermark, in one snapshot, so
they are exact and never count an event twice. Folding per event instead would rewrite
32 wide rows on 32 pages per request.

Queries are blocking and meant for a thread (``asyncio.to_thread``): each opens its own
connection, which WAL lets run alongside the writer (and alongside another process, such
as ``omen usage``). The SQL is plain (CASE, SUM, CTE, upsert, peewee's placeholder), so
a PostgreSQL store for a team deployment can reuse it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
import peewee
from peewee import (
    AutoField,
    BooleanField,
    CompositeKey,
    Database,
    DoubleField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from ..memtrim import release_memory
from ..observe import AttemptStarted, UsageEvent
from ..private_files import private_file
from . import rollup as r
from . import sanitise
from .journal import Record

log = logging.getLogger(__name__)

BATCH = 5000
MAX_QUEUE = 20_000  # records held in memory for the writer; past it they stay in the journal only
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0  # pause between attempts while the store fails (a flush cuts it short)
REJECTED_FILE = "usage-rejected.jsonl"
COMPACT_EVERY = 1000  # events past the watermark that trigger a fold into the rollups
COMPACT_AFTER_S = 5.0  # or this long without new records
LINGER_S = 0.05  # after a first record, wait this long for more: one commit (and GIL hand-off) per batch
Item = tuple[str, int, Record]  # (kind, journal seq (0: not journaled), record)
Reread = Callable[[int, int], Iterator[tuple[int, str, Record]]]  # journal records with after < seq <= upto


class WriterError(RuntimeError):
    """Usage could not be committed: the store is failing, or the writer is not running."""


# ---------------------------------------------------------------- schema
# Unbound models: every query is bound to its store's database, so stores can coexist.


class EventRow(Model):
    id = AutoField()
    attempt_id = TextField()
    request_id = TextField(index=True)
    time = DoubleField(index=True)
    hour = IntegerField()
    user = TextField()
    workspace = TextField(null=True)
    client = TextField(null=True)
    session = TextField(null=True)
    provider = TextField()
    model = TextField()
    strategy = TextField()
    prompt_tokens = IntegerField()
    completion_tokens = IntegerField()
    cached_tokens = IntegerField()
    cache_write_tokens = IntegerField()
    reasoning_tokens = IntegerField()
    cost_usd = DoubleField()
    ttft_ms = DoubleField(null=True)
    total_ms = DoubleField()
    outcome = TextField()
    estimated = BooleanField()
    error = TextField(null=True)
    is_first = BooleanField()  # the request's first attempt: counts the request once
    lat_bin = IntegerField(null=True)  # latency histogram bin, for served attempts only
    asked = TextField(null=True)  # the model name the client sent, when an [aliases] pattern mapped it

    class Meta:
        table_name = "usage_event"
        indexes = ((("user", "time"), False),)


class RollupRow(Model):
    grain = IntegerField()  # 0 hour, 1 day
    cube = IntegerField()  # bit set of the dimensions kept (rollup.DIM_BIT); others are ''
    period = IntegerField()  # hours or days since the epoch (UTC)
    user = TextField()
    workspace = TextField()
    provider = TextField()
    model = TextField()

    class Meta:
        table_name = "usage_rollup"
        primary_key = CompositeKey("grain", "cube", "period", "user", "workspace", "provider", "model")
        without_rowid = True


for _name in r.METRICS:
    RollupRow._meta.add_field(
        _name,
        DoubleField(null=True)
        if _name in r.EXTREMES
        else DoubleField(default=0)
        if _name in ("cost_usd", "lat_sum", "ttft_sum")
        else IntegerField(default=0),
    )


class CubeRow(Model):
    grain = IntegerField()
    cube = IntegerField()

    class Meta:
        table_name = "usage_cube"
        primary_key = CompositeKey("grain", "cube")


class OpenAttemptRow(Model):
    """A stream that reached its client and has not reported yet."""

    attempt_id = TextField(primary_key=True)
    request_id = TextField()
    user = TextField()
    workspace = TextField(null=True)
    client = TextField(null=True)
    session = TextField(null=True)
    provider = TextField()
    model = TextField()
    strategy = TextField()
    prompt_tokens = IntegerField()
    output_chars = IntegerField()
    time = DoubleField()
    last_time = DoubleField()

    class Meta:
        table_name = "usage_open_attempt"


class MetaRow(Model):
    key = TextField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "usage_meta"


MODELS: list[type[Model]] = [EventRow, RollupRow, CubeRow, OpenAttemptRow, MetaRow]
TIME_INDEX, USER_TIME_INDEX = "eventrow_time", "eventrow_user_time"  # peewee's names for EventRow's indexes
SCOPE_DAY_INDEX = "usage_rollup_scope_day"
SCOPE_DAY_WHERE = f"grain = 1 AND cube IN ({r.DIM_BIT['user']}, {r.DIM_BIT['workspace']})"  # the partial index's rows
_SCHEMA_LOCK = threading.Lock()  # bind_ctx rebinds the model classes for a moment

EVENT_COLUMNS = (
    "attempt_id", "request_id", "time", "hour", "user", "workspace", "client", "session", "provider", "model",
    "strategy", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
    "cost_usd", "ttft_ms", "total_ms", "outcome", "estimated", "error", "is_first", "lat_bin", "asked",
)  # fmt: skip
OPEN_COLUMNS = (
    "attempt_id", "request_id", "user", "workspace", "client", "session", "provider", "model", "strategy",
    "prompt_tokens", "output_chars", "time", "last_time",
)  # fmt: skip


def q(name: str) -> str:
    return f'"{name}"'


def sql(db: Database, text: str, params: Sequence[Any] = ()) -> Any:
    """peewee's execute_sql (untyped in its stubs), in one place."""
    return db.execute_sql(text, params)  # type: ignore[no-untyped-call]


def cursor(db: Database) -> Any:
    return db.cursor()  # type: ignore[no-untyped-call]


# sqlite3 binds exact ints, floats and strs at once but sends anything else (None, a bool,
# an enum) through its adapter lookup, which asks PrepareProtocol's type for ``__adapt__``
# and pays for a formatted AttributeError each time: about 3k instructions per value, eight
# values per usage event. With an adapter for None (a C callable that returns None) that is
# a dict hit; the rows below hold exact ints and strs for the rest (the outcome and the
# strategy are StrEnums, the flags bools). The binding is the same.
_NONE: Callable[[None], None] = {}.get  # type: ignore[assignment]  # any key -> None, in C
sqlite3.register_adapter(type(None), _NONE)


def event_row(e: UsageEvent) -> tuple[Any, ...]:
    u = e.usage
    served = e.outcome in r.SERVED
    return (
        e.attempt_id, e.request_id, e.time, int(e.time // r.HOUR), e.user, e.workspace, e.client, e.session,
        e.provider, e.model, str(e.strategy), u.prompt_tokens, u.completion_tokens, u.cached_tokens,
        u.cache_write_tokens, u.reasoning_tokens, e.cost_usd, e.ttft_ms, e.total_ms, str(e.outcome),
        1 if e.estimated else 0, e.error, 1 if e.attempt_id == e.request_id + ".0" else 0,
        r.lat_bin(e.total_ms) if served else None, e.asked,
    )  # fmt: skip


def metric_exprs(alias: str = "") -> list[str]:
    """SQL aggregates over raw events, in rollup.METRICS order."""
    a = alias
    served = f"{a}lat_bin IS NOT NULL"

    def count(cond: str) -> str:
        return f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"

    out = [
        "COUNT(*)",
        count(f"{a}is_first"),
        count(f"{a}outcome = 'ok'"),
        count(f"{a}outcome = 'error'"),
        count(f"{a}outcome = 'cancelled'"),
        count(f"{a}outcome = 'budget_cut'"),
        count(f"{a}estimated"),
        *(f"SUM({a}{t})" for t in r.TOKENS),
        f"SUM({a}cost_usd)",
        count(served),
        f"SUM(CASE WHEN {served} THEN {a}total_ms ELSE 0 END)",
        count(f"{served} AND {a}ttft_ms IS NOT NULL"),
        f"SUM(CASE WHEN {served} AND {a}ttft_ms IS NOT NULL THEN {a}ttft_ms ELSE 0 END)",
        f"MIN(CASE WHEN {served} THEN {a}total_ms END)",
        f"MAX(CASE WHEN {served} THEN {a}total_ms END)",
        *(count(f"{a}lat_bin = {i}") for i in range(r.LAT_BINS)),
    ]
    assert len(out) == len(r.METRICS)
    return out


def _upsert(m: str) -> str:
    """How a rollup row takes in new events' ``m``: sums add; extremes keep the smaller/larger
    (NULL, no served attempt, loses to any value; plain SQL, unlike SQLite's 2-argument MIN)."""
    if m not in r.EXTREMES:
        return f"{m} = usage_rollup.{m} + excluded.{m}"
    op = "<" if m == "lat_min" else ">"
    return f"{m} = CASE WHEN usage_rollup.{m} IS NULL OR excluded.{m} {op} usage_rollup.{m} THEN excluded.{m} ELSE usage_rollup.{m} END"


def fold_sql(param: str) -> str:
    """Fold events with ``lo < id <= hi`` into every (cube, grain) rollup row: aggregate once
    at the finest grain (hour x all four dimensions), then expand that to the 32 cubes."""
    fine = ", ".join(f"{expr} AS {name}" for expr, name in zip(metric_exprs(), r.METRICS, strict=True))
    ws = "COALESCE(workspace, '')"
    dims = [
        f"CASE WHEN (c.cube & {r.DIM_BIT[d]}) <> 0 THEN f.{d}_ ELSE '' END" for d in r.DIMS
    ]
    key = ["grain", "cube", "period", q("user"), "workspace", "provider", "model"]
    metrics = ", ".join(r.METRICS)
    updates = ", ".join(_upsert(m) for m in r.METRICS)
    return (
        f"WITH f AS (SELECT hour, {q('user')} AS user_, {ws} AS workspace_, provider AS provider_, model AS model_, "
        f"{fine} FROM usage_event WHERE id > {param} AND id <= {param} "
        f"GROUP BY hour, {q('user')}, {ws}, provider, model) "
        f"INSERT INTO usage_rollup ({', '.join(key)}, {metrics}) "
        f"SELECT c.grain, c.cube, CASE WHEN c.grain = 0 THEN f.hour ELSE f.hour / 24 END, {', '.join(dims)}, "
        f"{', '.join(f'{r.AGG[m]}(f.{m})' for m in r.METRICS)} "
        f"FROM f CROSS JOIN usage_cube c WHERE 1 = 1 GROUP BY 1, 2, 3, 4, 5, 6, 7 "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


@dataclass(frozen=True, slots=True)
class EventQuery:
    start: float | None = None
    end: float | None = None
    filters: tuple[tuple[str, str], ...] = ()  # user, workspace, provider, model, outcome, request_id
    limit: int = 100
    before_id: int | None = None  # the cursor: events older (lower id) than this


EVENT_FILTERS = ("user", "workspace", "provider", "model", "outcome", "request_id")


class UsageStore(Protocol):
    """What metering needs from storage. Writes are queued (loop-safe); the rest blocks (use a thread)."""

    committed: int
    path: Path
    team_id: str | None  # the books' identity, shared by every instance writing them (pg_store.py)

    def open(self) -> int: ...
    def hold(self) -> contextlib.AbstractContextManager[Any]: ...
    def apply(self, items: Sequence[Item], *, fold: bool = False) -> None: ...
    def commit(self, items: list[Item]) -> int: ...
    def open_attempts(self) -> list[dict[str, Any]]: ...
    def start_writer(self, on_commit: Callable[[int], None] | None = None, reread: Reread | None = None) -> None: ...
    def submit(self, kind: str, seq: int, record: Record) -> None: ...
    def backlog_full(self) -> bool: ...
    def position(self) -> tuple[int, int]: ...
    def durable(self, position: tuple[int, int]) -> bool: ...
    def flush(self) -> concurrent.futures.Future[None]: ...
    def health(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def rollup(self, query: r.RollupQuery) -> dict[str, Any]: ...
    def events(self, query: EventQuery) -> dict[str, Any]: ...
    def spend(self, since_day: int) -> list[tuple[str, str, int, float, int]]: ...
    def spend_of(self, kind: str, name: str, since_day: int) -> list[tuple[int, float, int]]: ...
    def read_later(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]: ...


class SqliteUsageStore:
    event_columns: tuple[str, ...] = EVENT_COLUMNS
    open_columns: tuple[str, ...] = OPEN_COLUMNS
    on_duplicate_event = ""  # one process appends: an event cannot arrive twice
    team_id: str | None = None  # this instance's own books: no team

    def __init__(self, path: Path, *, max_queue: int = MAX_QUEUE, db: Database | None = None) -> None:
        self.path = path
        self.db: Database = db or SqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "synchronous": 1,  # NORMAL: WAL stays consistent; the journal covers a crash
                "busy_timeout": 10000,
                # Bounded memory: a 2 MB page cache per connection (the OS caches the file
                # too), and sorts that spill to temporary files (in memory, a fold's or a
                # rollup's sort of many distinct names swelled the process by 150 MB at a
                # time; bench/soak.py).
                "cache_size": -2000,
                "temp_store": 1,
            },
        )
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._urgent = threading.Event()  # a flush or stop is waiting: cut the linger short
        self._on_commit: Callable[[int], None] | None = None
        self._reread: Reread | None = None
        # Loop side (one writer each): what was submitted, and whether new records stay in the journal.
        self._submitted = 0  # records put on the queue
        self._last_seq = 0  # highest journal seq submitted, queued or not
        self._spilling = False
        self._spill_to = 0
        self._spill_lock = threading.Lock()  # the loop starts a spill, the writer ends it
        # Writer side.
        self._applied = 0  # queued records committed (or found read back already)
        self._stopping = False
        self._dead: BaseException | None = None
        self._ctl_lock = threading.Lock()
        self._waiters: list[tuple[concurrent.futures.Future[None], int, int]] = []  # (future, records, seq)
        self._backoff = BACKOFF_MIN_S
        self._behind_since: float | None = None
        self._unreadable_rounds = 0
        self._failures_before = 0
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None  # point reads, one kept connection
        # Health.
        self.state = "not_started"
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.failures = 0
        self.records_written = 0
        self.events_written = 0
        self.cleaned = 0
        self.rejected = 0
        self._open_ids: set[str] = set()
        self._fold = fold_sql(self.db.param)
        p = self.db.param
        self._insert_event = (
            f"INSERT INTO usage_event ({', '.join(q(c) for c in self.event_columns)}) "
            f"VALUES ({', '.join([p] * len(self.event_columns))}){self.on_duplicate_event}"
        )
        self._insert_open = (
            f"INSERT INTO usage_open_attempt ({', '.join(q(c) for c in self.open_columns)}) "
            f"VALUES ({', '.join([p] * len(self.open_columns))})"
        )
        self.committed = 0  # journal sequence number applied last
        self.rolled_id = 0  # events up to this id are folded into the rollups
        self.last_id = 0

    # ------------------------------------------------------------ lifecycle (blocking)

    def open(self) -> int:
        """Create the schema if needed; return the journal sequence number committed last."""
        private_file(self.path)  # 0600 before SQLite opens it: its -wal and -shm get the same mode
        with self.db.connection_context():
            if not {m._meta.table_name for m in MODELS} <= set(self.db.get_tables()):
                with _SCHEMA_LOCK, self.db.bind_ctx(MODELS), self.db.atomic():
                    self.db.create_tables(MODELS, safe=True)
                    if not CubeRow.select().exists():
                        CubeRow.insert_many(
                            [(g, c) for g in (0, 1) for c in r.CUBES], fields=[CubeRow.grain, CubeRow.cube]
                        ).execute()
            self._migrate()
            self.committed = self._meta(self.seq_key)
            self.rolled_id = self._meta("rolled_id")
            self.last_id = sql(self.db, "SELECT COALESCE(MAX(id), 0) FROM usage_event").fetchone()[0]
            self._open_ids = {a for (a,) in sql(self.db, "SELECT attempt_id FROM usage_open_attempt")}
        return self.committed

    def _migrate(self) -> None:
        """Bring a store made by an older version up to date (idempotent, cheap when current)."""
        columns = {row[1] for row in sql(self.db, "PRAGMA table_info(usage_rollup)").fetchall()}
        if "lat_min" not in columns:  # before extremes were kept: the histogram's edges are safe bounds
            lows = " ".join(f"WHEN l{i} > 0 THEN {r.bin_edges(i)[0]!r}" for i in range(r.LAT_BINS))
            highs = " ".join(
                f"WHEN l{i} > 0 THEN {r.bin_edges(i)[1]!r}" if i < r.LAT_BINS - 1 else f"WHEN l{i} > 0 THEN 9e999"
                for i in reversed(range(r.LAT_BINS))
            )
            with self.db.atomic():
                sql(self.db, "ALTER TABLE usage_rollup ADD COLUMN lat_min REAL")
                sql(self.db, "ALTER TABLE usage_rollup ADD COLUMN lat_max REAL")
                sql(self.db, f"UPDATE usage_rollup SET lat_min = CASE {lows} END, lat_max = CASE {highs} END WHERE lat_n > 0")
        if "asked" not in {row[1] for row in sql(self.db, "PRAGMA table_info(usage_event)").fetchall()}:
            sql(self.db, "ALTER TABLE usage_event ADD COLUMN asked TEXT")  # before model-name patterns
        # One scope's spend per day, without reading every scope's rows (the ledger's reloads).
        sql(
            self.db,
            f"CREATE INDEX IF NOT EXISTS {SCOPE_DAY_INDEX} ON usage_rollup ({q('user')}, workspace, period) "
            f"WHERE {SCOPE_DAY_WHERE}",
        )

    def _meta(self, key: str) -> int:
        row = sql(self.db, f"SELECT value FROM usage_meta WHERE key = {self.db.param}", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        p = self.db.param
        sql(
            self.db,
            f"INSERT INTO usage_meta (key, value) VALUES ({p}, {p}) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    def _connected(self) -> Any:
        """This thread's open connection, or one for the duration of the block."""
        return self.db.connection_context() if self.db.is_closed() else contextlib.nullcontext()

    # ------------------------------------------------------------ what differs between databases
    # (the PostgreSQL store, pg_store.py, overrides these; the SQL above and below is shared)

    seq_key = "journal_seq"  # where this store keeps the journal position it applied last

    def row(self, e: UsageEvent) -> tuple[Any, ...]:
        """An event's column values, in ``self.event_columns`` order."""
        return event_row(e)

    def open_row(self, values: list[Any]) -> Sequence[Any]:
        """A stream in flight's column values, in ``self.open_columns`` order."""
        return values

    def hint(self, text: str) -> str:
        """SQLite's index hints (``NOT INDEXED``, ``INDEXED BY``); other databases plan alone."""
        return text

    def content_error(self, exc: BaseException) -> bool:
        return _content_error(exc)

    def _insert_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(self._insert_event, rows)

    def _begin_write(self) -> None:
        """First statement of every write transaction (one process writes SQLite: nothing to do)."""

    def _snapshot(self) -> Any:
        """A read transaction whose statements all see one snapshot (SQLite's are so already)."""
        return self.db.atomic()

    def hold(self) -> contextlib.AbstractContextManager[Any]:
        """Keep one connection across several calls from this thread (start-up recovery)."""
        return cast(contextlib.AbstractContextManager[Any], self._connected())

    def apply(self, items: Sequence[Item], *, fold: bool = False) -> None:
        """Commit records in one transaction (the writer thread, or recovery before it starts);
        fold the new events into the rollups when enough have gathered (or when ``fold``)."""
        events: list[tuple[Any, ...]] = []
        starts: dict[str, list[Any]] = {}
        progress: dict[str, tuple[int, float]] = {}
        ended: list[str] = []
        last = 0
        for _kind, seq, rec in items:
            last = max(last, seq)
            if isinstance(rec, UsageEvent):
                events.append(self.row(rec))
                aid = rec.attempt_id
                if starts.pop(aid, None) is None and aid in self._open_ids:
                    ended.append(aid)
                progress.pop(aid, None)
            elif isinstance(rec, AttemptStarted):
                starts[rec.attempt_id] = [
                    rec.attempt_id, rec.request_id, rec.user, rec.workspace, rec.client, rec.session, rec.provider,
                    rec.model, str(rec.strategy), rec.prompt_tokens, 0, rec.time, rec.time,
                ]  # fmt: skip
            else:
                row = starts.get(rec.attempt_id)
                if row is not None:
                    row[10], row[12] = rec.output_chars, rec.time
                elif rec.attempt_id in self._open_ids:
                    progress[rec.attempt_id] = (rec.output_chars, rec.time)
        p = self.db.param
        marks = (self.last_id, self.rolled_id)
        try:
            self._apply(events, fold, starts, progress, ended, last, p)
        except BaseException:
            # The transaction rolled back: so do the watermarks, or a retry would skip folding.
            self.last_id, self.rolled_id = marks
            raise
        self._open_ids.update(starts)
        self._open_ids.difference_update(ended)
        self.committed = max(self.committed, last)

    def _apply(
        self,
        events: list[Any],
        fold: bool,
        starts: dict[str, list[Any]],
        progress: dict[str, tuple[int, float]],
        ended: Any,
        last: int,
        p: str,
    ) -> None:
        """One transaction: insert the events, fold if due, track streams in flight."""
        with self._connected(), self.db.atomic():
            self._begin_write()
            cur = cursor(self.db)
            if events:
                self._insert_events(cur, events)
                self.last_id = sql(self.db, "SELECT MAX(id) FROM usage_event").fetchone()[0]
            if fold or self.last_id - self.rolled_id >= COMPACT_EVERY:
                self._fold_tail()
            if starts:
                cur.executemany(self._insert_open, [self.open_row(row) for row in starts.values()])
            if progress:
                cur.executemany(
                    f"UPDATE usage_open_attempt SET output_chars = {p}, last_time = {p} WHERE attempt_id = {p}",
                    [(c, t, a) for a, (c, t) in progress.items()],
                )
            if ended:
                cur.executemany(f"DELETE FROM usage_open_attempt WHERE attempt_id = {p}", [(a,) for a in ended])
            if last > self.committed:
                self._set_meta(self.seq_key, last)

    def _fold_tail(self) -> None:
        """Fold the events past the watermark into the rollups (inside the caller's transaction)."""
        if self.last_id > self.rolled_id:
            sql(self.db, self._fold, (self.rolled_id, self.last_id))
            self._set_meta("rolled_id", self.last_id)
            self.rolled_id = self.last_id

    def compact(self) -> None:
        """Fold whatever events are not in the rollups yet."""
        if self.last_id > self.rolled_id:
            with self._connected(), self.db.atomic():
                self._begin_write()
                self._fold_tail()

    def open_attempts(self) -> list[dict[str, Any]]:
        """Streams that started and never reported (their process died)."""
        with self._connected():
            return cast(list[dict[str, Any]], list(OpenAttemptRow.select().dicts().bind(self.db)))

    # ------------------------------------------------------------ committing, robustly (writer or recovery)

    def commit(self, items: list[Item]) -> int:
        """Apply ``items`` like :meth:`apply`, but a record whose content SQLite refuses (a lone
        surrogate, an integer past 64 bits, a NaN where a number belongs) cannot block the
        others: it is cleaned (sanitise.clean) and stored, or else set aside in
        ``usage-rejected.jsonl`` and logged. Committed items leave ``items``; on an exception the
        rest remain, to be retried. Returns the number of usage events stored."""
        try:
            self.apply(items)
        except Exception as exc:
            if not self.content_error(exc):
                raise
            return self._isolate(items)
        n = sum(1 for _, _, rec in items if isinstance(rec, UsageEvent))
        items.clear()
        return n

    def _isolate(self, items: list[Item]) -> int:
        """One record per transaction, to find and clean the ones SQLite refuses (rare)."""
        stored = 0
        while items:
            kind, seq, rec = items[0]
            try:
                self.apply([items[0]])
            except Exception as exc:
                if not self.content_error(exc):
                    raise
                try:
                    self.apply([(kind, seq, sanitise.clean(rec))])
                except Exception as again:
                    if not self.content_error(again):
                        raise
                    self._reject(kind, seq, rec, again)
                else:
                    stored += isinstance(rec, UsageEvent)
                    self.cleaned += 1
                    log.warning("usage record %d had content SQLite refused (%s); stored cleaned", seq, exc)
            else:
                stored += isinstance(rec, UsageEvent)
            del items[0]
        return stored

    def _reject(self, kind: str, seq: int, rec: Record, exc: Exception) -> None:
        """Set aside a record SQLite refuses even cleaned: loud, and kept in a file, never dropped."""
        path = self.path.parent / REJECTED_FILE
        try:
            line = orjson.dumps([seq, kind, rec, f"{type(exc).__name__}: {exc}"], default=repr, option=orjson.OPT_APPEND_NEWLINE)
        except Exception:
            line = (repr([seq, kind, rec]) + "\n").encode("utf-8", "backslashreplace")
        with open(path, "ab") as f:
            f.write(line)
        self.rejected += 1
        log.error("usage record %d cannot be stored in SQLite (%s); set aside in %s", seq, exc, path)
        if seq > self.committed:  # its journal position is dealt with
            with self._connected(), self.db.atomic():
                self._set_meta(self.seq_key, seq)
            self.committed = seq

    # ------------------------------------------------------------ the writer: the serving loop's side

    def start_writer(self, on_commit: Callable[[int], None] | None = None, reread: Reread | None = None) -> None:
        """Start the writer thread. ``reread(after, upto)`` yields journal records; with it, the
        queue is bounded (records past ``max_queue`` stay in the journal and are read back)."""
        self._on_commit, self._reread = on_commit, reread
        self.state = "ok"
        self._thread = threading.Thread(target=self._run, name="omen-usage-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, seq: int, record: Record) -> None:
        """Queue a record (``seq`` 0: it is not in the journal). Runs on the serving loop; never blocks."""
        if seq > self._last_seq:
            self._last_seq = seq
        if not self._spilling and self._queue.qsize() < self.max_queue:
            self._submitted += 1
            self._queue.put((kind, seq, record))
        else:
            self._overflow(kind, seq, record)

    def _overflow(self, kind: str, seq: int, record: Record) -> None:
        with self._spill_lock:
            if seq and self._reread is not None and (self._spilling or self._queue.qsize() >= self.max_queue):
                if not self._spilling:
                    self._spilling = True
                    log.warning(
                        "the usage writer is %d records behind; newer records stay in the journal until it catches up",
                        self._queue.qsize(),
                    )
                self._spill_to = seq  # the writer reads (committed, _spill_to] back from the journal
                return
        self._submitted += 1  # not in the journal: memory is its only copy (admission stops at the bound)
        self._queue.put((kind, seq, record))

    def backlog_full(self) -> bool:
        return self._queue.qsize() >= self.max_queue

    def position(self) -> tuple[int, int]:
        """A mark covering every record submitted so far (for :meth:`durable`)."""
        return (self._last_seq, self._submitted)

    def durable(self, position: tuple[int, int]) -> bool:
        """Whether every record submitted before ``position`` was taken is committed."""
        seq, n = position
        return self.committed >= seq and self._applied >= n

    def flush(self) -> concurrent.futures.Future[None]:
        """Done once everything submitted before has been committed; fails (WriterError) if a
        commit attempt fails meanwhile, or if the writer is not running."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._ctl_lock:
            if self._dead is not None:
                fut.set_exception(WriterError(f"the usage writer has stopped ({self.last_error})"))
                return fut
            if self._thread is None:
                if self._applied >= self._submitted and not self._spilling:
                    fut.set_result(None)
                else:
                    fut.set_exception(WriterError("the usage writer is not running"))
                return fut
            self._waiters.append((fut, self._submitted, self._spill_to if self._spilling else 0))
        self._urgent.set()
        self._queue.put(_WAKE)
        return fut

    def health(self) -> dict[str, Any]:
        """The writer at a glance (for /v1/omen/status): ok | failing | dead | stopped | not_started."""
        behind = self._behind_since
        return {
            "state": self.state,
            "last_error": self.last_error,
            "failing_since": r.iso(self.failing_since) if self.failing_since is not None else None,
            "queued": self._queue.qsize(),
            "max_queue": self.max_queue,
            "journal_only": max(0, self._spill_to - self.committed) if self._spilling else 0,
            "lag_s": round(max(0.0, time.time() - behind), 3) if behind is not None else 0.0,
            "records_written": self.records_written,
            "events_written": self.events_written,
            "failures": self.failures,
            "cleaned": self.cleaned,
            "rejected": self.rejected,
        }

    def close(self) -> None:
        """Commit what is queued (and what waits in the journal), fold it into the rollups, stop
        the writer. If the store is failing, the rest stays in the journal for the next start."""
        if self._thread is not None:
            self._stopping = True
            self._urgent.set()
            self._queue.put(_WAKE)
            self._thread.join()
            self._thread = None
            if self.state != "dead":
                self.state = "stopped"
        self._fail_waiters(WriterError("the usage store is closed"))
        if self._reader is not None:
            self._reader.submit(self.db.close).result()
            self._reader.shutdown()
            self._reader = None
        if not self.db.is_closed():
            self.db.close()

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        try:
            self.db.connect(reuse_if_open=True)
            self._work()
        except BaseException as exc:  # a bug: say so, and let flushes fail rather than hang or lie
            self._die(exc)
        finally:
            with contextlib.suppress(Exception):
                self.db.close()

    def _work(self) -> None:
        pending: list[Item] = []
        taken = 0  # how many of pending's records came from the queue
        while True:
            progressed = False
            if not pending:
                pending, taken = self._gather()
                if not pending and taken:  # only records already read back from the journal
                    self._applied += taken
                    taken, progressed = 0, True
            if pending:
                records = len(pending)
                try:
                    events = self.commit(pending)
                except Exception as exc:  # kept (and still in the journal): retried, with a growing pause
                    self._failed(exc)
                    if self._stopping:
                        return
                    self._urgent.wait(self._backoff)
                    self._urgent.clear()
                    self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
                    continue
                self._succeeded(taken, records, events)
                pending, taken, progressed = [], 0, True
                release_memory()  # a batch's rows and a fold's sorts leave freed arena pages (at most every 5 s)
            self._end_spill()
            if not pending and not self._spilling and self._applied >= self._submitted:
                self._behind_since = None  # caught up
            self._resolve_waiters()
            if self._stopping and not pending:
                if self._applied >= self._submitted and not self._spilling:
                    self._compact_logged()
                    return
                if not progressed:
                    return  # nothing more can be read: the journal keeps it for the next start

    def _gather(self) -> tuple[list[Item], int]:
        """The next batch: from the queue (lingering after a first record, so that one commit
        covers many), else read back from the journal if records were left there."""
        try:
            first = self._queue.get_nowait()
        except queue.Empty:
            if self._spilling:
                return self._from_journal(), 0
            if self._stopping:
                return [], 0
            try:  # a quiet writer folds the tail of new events into the rollups
                first = self._queue.get(timeout=COMPACT_AFTER_S if self.last_id > self.rolled_id else None)
            except queue.Empty:
                self._compact_logged()
                return [], 0
        if first is not _WAKE and not self._stopping:
            self._urgent.wait(LINGER_S)  # the journal holds these meanwhile: let a batch gather
        items: list[Item] = []
        taken = 0
        item = first
        while True:
            if item is not _WAKE:
                taken += 1
                if not 0 < item[1] <= self.committed:  # else read back from the journal already
                    items.append(item)
                if len(items) >= BATCH:
                    break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        self._urgent.clear()
        if items and self._behind_since is None:
            self._behind_since = items[0][2].time
        return items, taken

    def _from_journal(self) -> list[Item]:
        """Records left in the journal while the queue was full, oldest first."""
        assert self._reread is not None
        upto, items = self._spill_to, []
        try:
            for seq, kind, rec in self._reread(self.committed, upto):
                items.append((kind, seq, rec))
                if len(items) >= BATCH:
                    break
        except OSError as exc:  # cannot read the journal now (EMFILE, EIO): pause, then try again
            self._failed(exc)
            self._urgent.wait(self._backoff)
            self._urgent.clear()
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
            return []
        if items:
            self._unreadable_rounds = 0
            if self._behind_since is None:
                self._behind_since = items[0][2].time
            return items
        self._unreadable_rounds += 1
        if self._unreadable_rounds >= 3 and self.committed < upto:  # not a line being written: lost to corruption
            log.error("usage journal records %d to %d cannot be read back; skipped", self.committed + 1, upto)
            with self._connected(), self.db.atomic():
                self._set_meta(self.seq_key, upto)
            self.committed = upto
            self._unreadable_rounds = 0
        else:
            self._urgent.wait(LINGER_S)
            self._urgent.clear()
        return []

    def _end_spill(self) -> None:
        if self._spilling and self.committed >= self._spill_to:
            with self._spill_lock:
                if self.committed >= self._spill_to:
                    self._spilling = False
                    log.warning("the usage writer has caught up with the journal")

    def _succeeded(self, taken: int, records: int, events: int) -> None:
        self._applied += taken
        self.records_written += records
        self.events_written += events
        if self.state == "failing":
            since = self.failing_since or time.time()
            log.warning(
                "usage records are written to %s again (after %d failed attempts over %.1f s)",
                self.path,
                self.failures - self._failures_before,
                time.time() - since,
            )
        self.state, self.failing_since, self._backoff = "ok", None, BACKOFF_MIN_S
        if self._on_commit is not None:
            try:
                self._on_commit(self.committed)
            except Exception:
                log.exception("usage journal clean-up failed")

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.state != "failing":  # loud once per episode; the status shows the rest
            self.state, self.failing_since, self._failures_before = "failing", time.time(), self.failures - 1
            log.error(
                "cannot write usage records to %s (%s); they stay in the journal and are retried",
                self.path,
                self.last_error,
                exc_info=exc,
            )
        self._fail_waiters(WriterError(f"usage could not be written to {self.path.name}: {self.last_error}"))

    def _die(self, exc: BaseException) -> None:
        with self._ctl_lock:
            self._dead = exc
            self.state = "dead"
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._behind_since is None:
                self._behind_since = time.time()
        log.critical("the usage writer stopped (%s); usage stays in the journal until the next start", self.last_error, exc_info=exc)
        self._fail_waiters(WriterError(f"the usage writer has stopped ({self.last_error})"))

    def _resolve_waiters(self) -> None:
        with self._ctl_lock:
            if not self._waiters:
                return
            done = [w for w in self._waiters if self._applied >= w[1] and self.committed >= w[2]]
            self._waiters = [w for w in self._waiters if w not in done]
        for fut, _, _ in done:
            _settle(fut, None)

    def _fail_waiters(self, exc: Exception) -> None:
        with self._ctl_lock:
            waiters, self._waiters = self._waiters, []
        for fut, _, _ in waiters:
            _settle(fut, exc)

    def _compact_logged(self) -> None:
        try:
            self.compact()
        except Exception:  # the events are safe; folding is retried later
            log.exception("could not fold usage events into the rollups of %s", self.path)


    # ------------------------------------------------------------ queries (blocking)

    def rollup(self, query: r.RollupQuery) -> dict[str, Any]:
        """Totals per group over [start, end): rollup rows for whole hours and days, raw events
        for the ragged edges and for what is not folded yet, all read in one snapshot."""
        groups: dict[r.Key, list[Any]] = {}
        width = len(query.dims) + (1 if query.time_key else 0)
        p = self.db.param
        with self.db.connection_context(), self._snapshot():
            rolled = self._meta("rolled_id")
            folded: list[float] = []  # the seconds the rollup spans cover (they are contiguous)
            for span in r.spans(query.start, query.end, fine=query.time_key == "hour"):
                if span.grain == "raw":
                    self._merge_raw(groups, query, span.lo, span.hi, None)
                    continue
                unit = r.HOUR if span.grain == "hour" else r.DAY
                folded += [span.lo * unit, span.hi * unit]
                keys = [q(d) for d in query.dims]
                if query.time_key:
                    keys.append("period / 24" if query.time_key == "day" and span.grain == "hour" else "period")
                where = [f"grain = {p}", f"cube = {p}", f"period >= {p}", f"period < {p}"]
                params: list[Any] = [0 if span.grain == "hour" else 1, query.cube, int(span.lo), int(span.hi)]
                for dim, value in query.filters.items():
                    where.append(f"{q(dim)} = {p}")
                    params.append(value)
                if query.time_key == span.grain:  # one rollup row per group already: nothing to add up
                    text = f"SELECT {', '.join([*keys, *r.METRICS])} FROM usage_rollup WHERE {' AND '.join(where)}"
                else:
                    sums = ", ".join(f"{r.AGG[m]}({m})" for m in r.METRICS)
                    text = f"SELECT {', '.join([*keys, sums])} FROM usage_rollup WHERE {' AND '.join(where)}"
                    if keys:
                        text += f" GROUP BY {', '.join(keys)}"
                r.merge(groups, sql(self.db, text, params).fetchall(), width)
            if folded:  # events past the watermark are not in those rollup rows yet
                self._merge_raw(groups, query, min(folded), max(folded), rolled)
        return r.result(query, {k: v for k, v in groups.items() if v[0]})

    def _merge_raw(
        self, groups: dict[r.Key, list[Any]], query: r.RollupQuery, lo: float, hi: float, after_id: int | None
    ) -> None:
        """Aggregate raw events in [lo, hi): all of them, or only the unfolded tail past ``after_id``."""
        p = self.db.param
        keys = [q("user") if d == "user" else "COALESCE(workspace, '')" if d == "workspace" else d for d in query.dims]
        if query.time_key:
            keys.append("hour" if query.time_key == "hour" else "hour / 24")
        where = [f"{q('time')} >= {p}", f"{q('time')} < {p}"]
        params: list[Any] = [lo, hi]
        # Left alone, SQLite may walk a whole index that matches the GROUP BY: say which range to read.
        if after_id is not None:  # the short unfolded tail: the rowid range
            source = "usage_event" + self.hint(" NOT INDEXED")
            where.insert(0, f"id > {p}")
            params.insert(0, after_id)
        else:
            source = "usage_event" + self.hint(f" INDEXED BY {USER_TIME_INDEX if 'user' in query.filters else TIME_INDEX}")
        for dim, value in query.filters.items():
            where.append(f"{q(dim)} = {p}")
            params.append(value)
        text = f"SELECT {', '.join([*keys, *metric_exprs()])} FROM {source} WHERE {' AND '.join(where)}"
        if keys:
            text += f" GROUP BY {', '.join(keys)}"
        r.merge(groups, sql(self.db, text, params).fetchall(), len(keys))

    def events(self, query: EventQuery) -> dict[str, Any]:
        """A page of raw events, newest first; ``next_cursor`` continues where it stopped."""
        E = EventRow
        conds: list[Any] = []
        if query.start is not None:
            conds.append(E.time >= query.start)
        if query.end is not None:
            conds.append(E.time < query.end)
        for name, value in query.filters:
            conds.append(getattr(E, name) == value)
        if query.before_id is not None:
            conds.append(E.id < query.before_id)
        select = E.select()
        if conds:
            select = select.where(*conds)
        with self.db.connection_context():
            rows: list[dict[str, Any]] = list(select.order_by(E.id.desc()).limit(query.limit + 1).dicts().bind(self.db))  # type: ignore[arg-type]
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return {
            "object": "list",
            "data": [_public_event(row) for row in rows],
            "has_more": more,
            "next_cursor": str(rows[-1]["id"]) if more else None,
        }

    def spend(self, since_day: int) -> list[tuple[str, str, int, float, int]]:
        """(scope kind, name, day, usd, tokens) per user and per workspace since ``since_day``."""
        p = self.db.param
        rolled_sql = (
            f"SELECT cube, {q('user')}, workspace, period, SUM(cost_usd), SUM(prompt_tokens + completion_tokens) "
            f"FROM usage_rollup WHERE grain = 1 AND cube IN ({r.DIM_BIT['user']}, {r.DIM_BIT['workspace']}) "
            f"AND period >= {p} GROUP BY cube, {q('user')}, workspace, period"
        )
        tail_sql = (
            f"SELECT {q('user')}, COALESCE(workspace, ''), hour / 24, SUM(cost_usd), "
            f"SUM(prompt_tokens + completion_tokens) FROM usage_event{self.hint(' NOT INDEXED')} WHERE id > {p} AND {q('time')} >= {p} "
            f"GROUP BY {q('user')}, COALESCE(workspace, ''), hour / 24"
        )
        totals: dict[tuple[str, str, int], list[float]] = {}

        def add(kind: str, name: str, day: int, usd: float, tokens: int) -> None:
            acc = totals.setdefault((kind, name, int(day)), [0.0, 0])
            acc[0] += usd
            acc[1] += tokens

        with self._connected(), self._snapshot():
            rolled = self._meta("rolled_id")
            for cube, user, workspace, day, usd, tokens in sql(self.db, rolled_sql, (since_day,)).fetchall():
                if cube == r.DIM_BIT["user"]:
                    add("user", user, day, usd, tokens)
                elif workspace:
                    add("workspace", workspace, day, usd, tokens)
            for user, workspace, day, usd, tokens in sql(self.db, tail_sql, (rolled, since_day * r.DAY)).fetchall():
                add("user", user, day, usd, tokens)
                if workspace:
                    add("workspace", workspace, day, usd, tokens)
        return [(kind, name, day, float(v[0]), int(v[1])) for (kind, name, day), v in totals.items()]

    def read_later(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run a short read (``spend_of``) on the store's reader thread, which keeps its
        connection open: opening one per call (and its PRAGMAs) costs more than the read."""
        if self._reader is None:
            self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="omen-usage-reader")
        return self._reader.submit(self._keep_connected, fn, *args)

    def _keep_connected(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.db.connect(reuse_if_open=True)  # this thread's own connection, kept until close()
        return fn(*args)

    def spend_of(self, kind: str, name: str, since_day: int) -> list[tuple[int, float, int]]:
        """(day, usd, tokens) of one user or workspace since ``since_day``: its day rollup rows
        (through the partial index) plus the unfolded tail, in one snapshot."""
        p = self.db.param
        user, workspace = (name, "") if kind == "user" else ("", name)
        rolled_sql = (
            f"SELECT period, cost_usd, prompt_tokens + completion_tokens FROM usage_rollup{self.hint(f' INDEXED BY {SCOPE_DAY_INDEX}')} "
            f"WHERE {SCOPE_DAY_WHERE} AND cube = {p} AND {q('user')} = {p} AND workspace = {p} AND period >= {p}"
        )
        column = q("user") if kind == "user" else "workspace"
        tail_sql = (
            f"SELECT hour / 24, SUM(cost_usd), SUM(prompt_tokens + completion_tokens) FROM usage_event{self.hint(' NOT INDEXED')} "
            f"WHERE id > {p} AND {q('time')} >= {p} AND {column} = {p} GROUP BY hour / 24"
        )
        days: dict[int, list[float]] = {}
        with self._connected(), self._snapshot():
            rolled = self._meta("rolled_id")
            rows = sql(self.db, rolled_sql, (r.DIM_BIT[kind], user, workspace, since_day)).fetchall()
            rows += sql(self.db, tail_sql, (rolled, since_day * r.DAY, name)).fetchall()
        for day, usd, tokens in rows:
            acc = days.setdefault(int(day), [0.0, 0])
            acc[0] += usd or 0.0
            acc[1] += tokens or 0
        return [(day, float(v[0]), int(v[1])) for day, v in sorted(days.items())]


_WAKE = object()  # a flush or stop wants the writer's attention


def _settle(fut: concurrent.futures.Future[None], exc: Exception | None) -> None:
    """Resolve a flush; its waiter may have given up (a cancelled request) meanwhile."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


def _content_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from what a record holds (retrying it as it is cannot help), as
    opposed to the database's state (locked, full, read-only, I/O), which may recover."""
    return isinstance(
        exc,
        UnicodeError | OverflowError | ValueError | TypeError | sqlite3.IntegrityError | sqlite3.InterfaceError
        | peewee.IntegrityError | peewee.InterfaceError | peewee.DataError,
    )  # fmt: skip


def _public_event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "attempt_id": row["attempt_id"],
        "request_id": row["request_id"],
        "time": row["time"],
        "user": row["user"],
        "workspace": row["workspace"],
        "client": row["client"],
        "session": row["session"],
        "provider": row["provider"],
        "model": row["model"],
        "asked_model": row.get("asked"),
        "strategy": row["strategy"],
        "outcome": row["outcome"],
        "estimated": bool(row["estimated"]),
        "error": row["error"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cached_tokens": row["cached_tokens"],
        "cache_write_tokens": row["cache_write_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "cost_usd": row["cost_usd"],
        "ttft_ms": row["ttft_ms"],
        "total_ms": row["total_ms"],
    }
