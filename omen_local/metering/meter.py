"""Metering, assembled: journal + usage store + quota ledger + rate limiter + the Policy.

On start (in a thread, before the server takes requests): lock the data dir's usage
store, replay the journal into SQLite, charge streams that a dead process never
reported (estimated from their last progress note, outcome ``cancelled``), start the
writer. Then ``record`` (the usage sink) journals each usage record, queues it for the
writer and charges it to the policy; on stop, everything queued is committed. The quota
ledger loads a scope's spend from the store when a limit first needs it (this object is
its SpendSource).

Nothing is lost quietly: a record the journal's encoder refuses (a lone surrogate from a
header) is cleaned and journaled; a journal that cannot be written is logged once per
episode and shown in :meth:`Metering.health`; if the journal fails *and* the writer's
queue is full, new requests are refused (503) rather than served unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..config import Config
from ..errors import OmenError
from ..observe import Outcome, UsageEvent
from ..private_files import private_dir
from ..providers.base import Usage
from . import rollup as r
from . import sanitise
from .books import LimitBook, QuotaBook
from .enforcer import Enforcer
from .journal import KIND_OF, Journal, Record
from .ledger import QUOTA_KEYS, LocalLedger, QuotaLedger, Scope
from .limits import LocalRateLimiter, RateLimiter
from .store import EventQuery, SqliteUsageStore, UsageStore, WriterError

log = logging.getLogger(__name__)

USAGE_DB = "usage.db"
JOURNAL_DIR = "usage-journal"
MAX_QUOTA_SCOPES = 100  # scopes with quota gauges in /metrics
CUT_BY_RESTART = "OMEN stopped before this stream ended; tokens estimated from what had been streamed"


class MeteringError(RuntimeError):
    """Metering cannot start (another server holds the usage store)."""


class DirLock:
    """An exclusive advisory lock on a file: one server per usage store (released by the OS on kill -9)."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if sys.platform == "win32":  # pragma: no cover
                import msvcrt

                msvcrt.locking(self.fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise MeteringError(
                f"another OMEN server is using the usage store in {path.parent} (stop it, or use another data dir)"
            ) from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the lock
            self.fd = -1


class Metering:
    def __init__(
        self,
        config: Config,
        *,
        store: UsageStore | None = None,
        ledger: QuotaLedger | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        data_dir = config.data_dir
        self.config, self.clock = config, clock
        team = config.team
        if store is None and team is not None:  # the team's books (docs/team.md); drivers imported only then
            from .pg_store import PgUsageStore

            store = PgUsageStore(team.database_url, team.instance, data_dir)
        self.store: UsageStore = store or SqliteUsageStore(data_dir / USAGE_DB)
        # This instance's name in the team's books, None for this machine's: chosen at start, as the
        # store is (a reload that adds or drops [team] applies at the next start).
        self.instance = team.instance if team is not None else None
        self.journal = Journal(data_dir / JOURNAL_DIR)
        self.quotas = QuotaBook(config.quotas, data_dir)
        self.limits = LimitBook(config.limits)
        if ledger is None and team is not None and team.redis_url is not None:
            from .redis_ledger import RedisLedger

            ledger = RedisLedger(team.redis_url, clock, source=self)
        self.ledger: QuotaLedger = ledger or LocalLedger(clock, source=self)
        if limiter is None and team is not None and team.redis_url is not None:
            from .redis_limits import RedisRateLimiter

            limiter = RedisRateLimiter(team.redis_url)
        self.limiter: RateLimiter = limiter or LocalRateLimiter()
        self.policy = Enforcer(self.quotas, self.limits, self.ledger, self.limiter, clock, blocked=self.recording_blocked)
        self.recovered = 0  # streams charged at start for a process that died
        self._lock: DirLock | None = None
        # The journal's health: a failure episode is logged once and shown in health().
        self.journal_error: str | None = None
        self.journal_failures = 0
        self.unjournaled = 0  # records only memory held (their journal write failed)
        self.cleaned = 0  # records whose content the journal's encoder refused, stored cleaned

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._lock = DirLock(self.config.data_dir / "usage.lock")
        try:
            try:
                with self.store.hold():  # one connection for the whole recovery
                    self._recover()
            except Exception as exc:
                unreachable = getattr(self.store, "unreachable", None)
                if unreachable is None or not unreachable(exc):
                    raise
                self._defer(exc)
            self.store.start_writer(self.journal.release, reread=self.journal.read)
            warm = getattr(self.limiter, "warm", None)  # a shared limiter's connection, before requests
            if warm is not None:
                warm()
        except BaseException:
            self._lock.release()
            raise

    def _recover(self) -> None:
        """Replay the journal past what SQLite has, charge cut streams, load the ledger."""
        committed = self.store.open()
        since = committed
        if self.journal.unnumbered:  # begun from nothing while the store was away: none of it is there yet
            since = 0
            if committed:
                log.error(
                    "the usage store holds this instance's records up to number %d, but its journal here was begun "
                    "anew (its folder deleted?): every record of the journal is stored now",
                    committed,
                )
        last, batch = committed, []
        for seq, kind, record in self.journal.replay(since):
            batch.append((kind, seq, record))
            last = seq
            if len(batch) >= 5000:
                self.store.commit(batch)
        if batch:
            self.store.commit(batch)
        if last > committed:
            log.info("usage journal: replayed %d records into %s", last - committed, self.store.path)
        self.recovered = self._charge_cut_streams()
        if isinstance(self.ledger, LocalLedger) and self.ledger.source is None:  # no source to load from later
            self.ledger.load(self.store.spend(int(r.month_start(self.clock()) // r.DAY)))
        self.journal.start(max(last, self.store.committed) + 1)
        self._journal_opened()

    def _journal_opened(self) -> None:
        """A journal that could not open its first segment (a full disk) shows in health at once."""
        if self.journal.open_error is not None:
            self.journal_error = self.journal.open_error
            self.journal_failures += 1

    def _defer(self, exc: BaseException) -> None:
        """The team's store is unreachable at start: serve anyway, journaling here; the writer
        ships the earlier journal (and charges cut streams) once the store answers."""
        last = self.journal.resume()
        self._journal_opened()
        log.error(
            "the team's usage store is unreachable at start (%s): usage is kept in the journal here "
            "and shipped when it answers",
            exc,
        )

        def recover() -> None:
            # A journal begun from nothing while the store was away (the mark): none of its
            # records is there, whatever the numbers say. One behind the store without the mark
            # (restored from a backup) may have shipped those up to ``last``: only newer ones go.
            unnumbered = self.journal.unnumbered
            if unnumbered or self.store.committed > last:
                since = 0 if unnumbered else last
                if self.store.committed > last:
                    log.error(
                        "the team's usage store holds this instance's records up to number %d, but its journal here "
                        "ends at %d (deleted or restored from a backup?); its records from %d on are shipped",
                        self.store.committed,
                        last,
                        since + 1,
                    )
                self.store.committed = since
            batch = []
            for seq, kind, record in self.journal.read(self.store.committed, last):
                batch.append((kind, seq, record))
                if len(batch) >= 5000:
                    self.store.commit(batch)
            if batch:
                self.store.commit(batch)
            if unnumbered:  # shipped: from now on the journal's numbers are the store's
                self.journal.numbered()
            self.recovered = self._charge_cut_streams()

        defer = getattr(self.store, "defer_open")  # noqa: B009 (only the team's store has it)
        defer(recover)

    def _charge_cut_streams(self) -> int:
        """Streams that reached a client and never reported: charge what they streamed, estimated."""
        events = []
        for row in self.store.open_attempts():
            usage = Usage(row["prompt_tokens"], (row["output_chars"] + 3) // 4)
            price = self.config.price_for(row["provider"], row["model"])
            events.append(
                UsageEvent(
                    attempt_id=row["attempt_id"],
                    request_id=row["request_id"],
                    user=row["user"],
                    workspace=row["workspace"],
                    client=row["client"],
                    session=row["session"],
                    provider=row["provider"],
                    model=row["model"],
                    strategy=row["strategy"],
                    usage=usage,
                    cost_usd=usage.cost(price),
                    ttft_ms=None,
                    total_ms=max(0.0, row["last_time"] - row["time"]) * 1000,
                    outcome=Outcome.CANCELLED,
                    estimated=True,
                    error=CUT_BY_RESTART,
                    time=row["last_time"],
                )
            )
        if events:
            self.store.commit([("u", 0, e) for e in events])
            log.warning("charged %d stream(s) cut by the previous server's end (estimated)", len(events))
        return len(events)

    async def stop(self) -> None:
        """Commit everything queued and release the store."""
        if self._lock is None:
            return
        for part in (self.ledger, self.limiter):  # a shared ledger's connection and pending charges
            aclose = getattr(part, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("could not close %s", type(part).__name__)
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self.store.close()
        self.journal.close(self.store.committed)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------ the usage sink (serving loop)

    def record(self, event: Record) -> None:
        """Journal (before the client hears more), queue for SQLite, charge the policy."""
        kind = KIND_OF[type(event)]
        try:
            seq = self.journal.append(kind, event)
        except Exception as exc:
            event, seq = self._append_failed(kind, event, exc)
        else:
            if self.journal_error is not None:
                log.warning("the usage journal is written again (after %d failures)", self.journal_failures)
                self.journal_error = None
        self.store.submit(kind, seq, event)
        if isinstance(event, UsageEvent):
            self.policy.on_usage(event)

    def reconfigure(self, config: Config) -> None:
        """New quotas and rate limits from a reloaded config; spend, holds and windows carry over."""
        self.config = config
        self.quotas = QuotaBook(config.quotas, config.data_dir)
        self.limits = LimitBook(config.limits)
        self.policy.configure(self.quotas, self.limits)

    def _append_failed(self, kind: str, event: Record, exc: Exception) -> tuple[Record, int]:
        """Journal what can be journaled; the record reaches the writer either way (seq 0: memory only)."""
        if isinstance(exc, orjson.JSONEncodeError):  # a field the encoder refuses: store it cleaned
            try:
                event = sanitise.clean(event)
            except Exception as why:  # the store cleans (or sets aside) what it cannot take
                log.exception("cannot clean a usage record (%s)", why)
            self.cleaned += 1
            log.warning("a usage record held text or numbers the journal cannot encode (%s); stored cleaned", exc)
            try:
                return event, self.journal.append(kind, event)
            except Exception as again:
                exc = again
        self.journal_failures += 1
        self.unjournaled += 1
        if self.journal_error is None:  # once per episode; health() shows the rest
            log.error(
                "cannot write the usage journal (%s: %s); usage is still recorded, but a crash may lose some",
                type(exc).__name__,
                exc,
            )
        self.journal_error = f"{type(exc).__name__}: {exc}"
        return event, 0

    @property
    def team_books(self) -> bool:
        """Whether the books are a team's (``[team]`` as it was at start)."""
        return self.instance is not None

    def books(self) -> str | None:
        """The team's books' id (``usage_meta.team_id``): read when the store opens them, or
        as last read (pg_store.py); None without ``[team]``, or if never read yet."""
        return self.store.team_id

    def recording_blocked(self) -> str | None:
        """Why a new request would go unrecorded (journal failing and the writer's queue full), or None."""
        if self.journal_error is not None and self.store.backlog_full():
            return f"usage cannot be recorded: the journal fails ({self.journal_error}) and the usage store is behind"
        return None

    def health(self) -> dict[str, Any]:
        """For /v1/omen/status: ``state`` is ok, or the worst of the writer's and the journal's."""
        writer = self.store.health()
        state = writer["state"]
        if state in ("ok", "stopped", "not_started") and self.journal_error is not None:
            state = "failing"
        return {
            "state": state,
            "writer": writer,
            "journal": {
                "state": "failing" if self.journal_error is not None else "ok",
                "last_error": self.journal_error,
                "failures": self.journal_failures,
                "unjournaled": self.unjournaled,
                "cleaned": self.cleaned,
            },
            "recovered_streams": self.recovered,
            **self._team_health(),
        }

    def _team_health(self) -> dict[str, Any]:
        """The team stores at a glance (docs/team.md): which instance, and whether each store answers."""
        if not self.team_books:  # as at start: the stores stay those of the start
            return {}
        ledger_health = getattr(self.ledger, "health", None)
        limiter_health = getattr(self.limiter, "health", None)
        writer = self.store.health()
        parts = {
            "database": {
                "state": "unreachable" if writer["state"] == "failing" else writer["state"],
                "unreachable_since": writer["failing_since"],
            },
            "quotas": ledger_health() if ledger_health is not None else {"state": "local"},
            "rate_limits": limiter_health() if limiter_health is not None else {"state": "local"},
        }
        return {"team": {"instance": self.instance, "books": self.store.team_id, **team_state(parts), **parts}}

    # ------------------------------------------------------------ quota gauges (/metrics)

    async def quota_use(self) -> list[tuple[str, str, str, float, float]]:
        """(kind, name, limit key, used, limit) for the owner and each scope the config or
        ``omen quota`` names (at most :data:`MAX_QUOTA_SCOPES`: the gauges' labels stay bounded;
        users under the default quota alone are in /v1/usage). With the team's Redis, the
        team's spend; alone, the larger of the ledger's tally and the store's committed spend."""
        scopes = list(dict.fromkeys([("user", "owner"), *(s for s, _ in self.quotas.configured())]))
        out: list[tuple[str, str, str, float, float]] = []
        now = self.clock()
        today, month = int(now // r.DAY), int(r.month_start(now) // r.DAY)
        fetch = getattr(self.ledger, "fetch_used", None)
        for scope in scopes[:MAX_QUOTA_SCOPES]:
            limits = self.quotas.limits(scope)
            if not limits:
                continue
            if fetch is not None:
                used = await fetch(scope)
            else:
                du = mu = dt = mt = 0.0
                for day, usd, tokens in await self.load(scope, month):
                    mu, mt = mu + usd, mt + tokens
                    if day == today:
                        du, dt = du + usd, dt + tokens
                used = tuple(max(a, b) for a, b in zip(self.ledger.used(scope), (du, mu, dt, mt), strict=True))
            by_key = dict(zip(QUOTA_KEYS, used, strict=True))
            out += [(scope[0], scope[1], k, float(by_key[k]), float(v)) for k, v in limits.items()]
        return out

    # ------------------------------------------------------------ SpendSource (for the quota ledger)

    def position(self) -> Any:
        return self.store.position()

    def durable(self, position: Any) -> bool:
        return self.journal_error is None and self.store.durable(position)

    async def load(self, scope: Scope, since_day: int) -> Sequence[tuple[int, float, int]]:
        """A scope's committed spend per day. A dropped tally was committed before it was
        dropped, so this is exact for it; no flush, which would cost a commit per load."""
        rows: Sequence[tuple[int, float, int]] = await asyncio.wrap_future(
            self.store.read_later(self.store.spend_of, scope[0], scope[1], since_day)
        )
        return rows

    # ------------------------------------------------------------ queries (for the API and the CLI)

    async def flush(self) -> None:
        """Wait until every event emitted so far is in SQLite (read-your-writes for /v1/usage);
        a 503 in the error shape if it cannot be (the store is failing, the writer stopped)."""
        try:
            await asyncio.wrap_future(self.store.flush())
        except WriterError as exc:
            raise OmenError(
                503,
                f"usage is not up to date: {exc}. Every request is kept in the usage journal and is written "
                "when the store recovers; see `metering` in /v1/omen/status",
                code="usage_store_unavailable",
                retry_after=5,
            ) from None

    async def rollup(self, query: r.RollupQuery) -> dict[str, Any]:
        await self.flush()
        return await asyncio.to_thread(self.store.rollup, query)

    async def events(self, query: EventQuery) -> dict[str, Any]:
        await self.flush()
        return await asyncio.to_thread(self.store.events, query)

    async def by_instance(self, start: float, end: float, user: str | None) -> list[dict[str, Any]]:
        """Usage per instance and user: the team's store knows every instance; alone, this one."""
        await self.flush()
        team_rows = getattr(self.store, "by_instance", None)
        if team_rows is not None:
            rows: list[dict[str, Any]] = await asyncio.to_thread(team_rows, start, end, user)
            return rows
        query = r.RollupQuery(start, end, ("user",), None, {"user": user} if user else {})
        result = await asyncio.to_thread(self.store.rollup, query)
        return [
            {
                "instance": "local",
                "user": row["user"],
                "requests": row["requests"],
                "attempts": row["attempts"],
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "cost_usd": row["cost_usd"],
            }
            for row in result["data"]
        ]


_STORE_NAMES = {"database": "PostgreSQL", "quotas": "Redis", "rate_limits": "Redis", "tokens": "PostgreSQL"}


def team_state(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``state`` (ok | degraded) and, when a team store is away, the one line a person reads
    (the tray, /v1/omen/status): "team store unreachable since …" and which."""
    down = sorted((p["unreachable_since"] or "", _STORE_NAMES.get(name, name), name)
                  for name, p in parts.items() if p.get("state") == "unreachable")  # fmt: skip
    if not down:
        return {"state": "ok", "message": None}
    stores = ", ".join(dict.fromkeys(f"{label} ({name.replace('_', ' ')})" for _, label, name in down))
    return {"state": "degraded", "message": f"team store unreachable since {down[0][0]}: {stores}"}
