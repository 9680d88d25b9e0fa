"""Metering, assembled: journal + usage store + quota ledger + rate limiter + the Policy.

On start (in a thread, before the server takes requests): lock the data dir's usage
store, replay the journal into SQLite, charge streams that a dead process never
reported (estimated from their last progress note, outcome ``cancelled``), load this
month's spend into the ledger, start the writer. Then ``record`` (the usage sink) journals
each usage record, queues it for the writer and charges it to the policy; on stop,
everything queued is committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..observe import Outcome, Record, UsageEvent
from ..providers.base import Usage
from . import rollup as r
from .books import LimitBook, QuotaBook
from .enforcer import Enforcer
from .journal import KIND_OF, Journal
from .ledger import LocalLedger, QuotaLedger
from .limits import LocalRateLimiter, RateLimiter
from .store import EventQuery, SqliteUsageStore, UsageStore

log = logging.getLogger(__name__)

USAGE_DB = "usage.db"
JOURNAL_DIR = "usage-journal"
CUT_BY_RESTART = "OMEN stopped before this stream ended; tokens estimated from what had been streamed"


class MeteringError(RuntimeError):
    """Metering cannot start (another server holds the usage store)."""


class DirLock:
    """An exclusive advisory lock on a file: one server per usage store (released by the OS on kill -9)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
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
        self.store: UsageStore = store or SqliteUsageStore(data_dir / USAGE_DB)
        self.journal = Journal(data_dir / JOURNAL_DIR)
        self.quotas = QuotaBook(config.quotas, data_dir)
        self.limits = LimitBook(config.limits)
        self.ledger: QuotaLedger = ledger or LocalLedger(clock)
        self.limiter: RateLimiter = limiter or LocalRateLimiter()
        self.policy = Enforcer(self.quotas, self.limits, self.ledger, self.limiter, clock)
        self.recovered = 0  # streams charged at start for a process that died
        self._lock: DirLock | None = None
        self._journal_failed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._lock = DirLock(self.config.data_dir / "usage.lock")
        try:
            with self.store.hold():  # one connection for the whole recovery
                self._recover()
            self.store.start_writer(self.journal.release)
        except BaseException:
            self._lock.release()
            raise

    def _recover(self) -> None:
        """Replay the journal past what SQLite has, charge cut streams, load the ledger."""
        committed = self.store.open()
        last, batch = committed, []
        for seq, kind, record in self.journal.replay(committed):
            batch.append((kind, seq, record))
            last = seq
            if len(batch) >= 5000:
                self.store.apply(batch)
                batch = []
        if batch:
            self.store.apply(batch)
        if last > committed:
            log.info("usage journal: replayed %d records into %s", last - committed, self.store.path)
        self.recovered = self._charge_cut_streams()
        if isinstance(self.ledger, LocalLedger):
            self.ledger.load(self.store.spend(int(r.month_start(self.clock()) // r.DAY)))
        self.journal.start(last + 1)

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
            self.store.apply([("u", 0, e) for e in events])
            log.warning("charged %d stream(s) cut by the previous server's end (estimated)", len(events))
        return len(events)

    async def stop(self) -> None:
        """Commit everything queued and release the store."""
        if self._lock is None:
            return
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self.store.close()
        self.journal.close(self.store.committed)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------ the usage sink (serving loop)

    def record(self, event: Record) -> None:
        """Journal (one write, before the client hears more), queue for SQLite, charge the policy."""
        kind = KIND_OF[type(event)]
        try:
            seq = self.journal.append(kind, event)
        except OSError as exc:  # the event still reaches SQLite; only crash-safety is lost
            seq = self.journal.seq
            if not self._journal_failed:
                self._journal_failed = True
                log.error("cannot write the usage journal (%s); usage is still recorded, but a crash may lose some", exc)
        self.store.submit(kind, seq, event)
        if isinstance(event, UsageEvent):
            self.policy.on_usage(event)

    def reconfigure(self, config: Config) -> None:
        """New quotas and rate limits from a reloaded config; spend, holds and windows carry over."""
        self.config = config
        self.quotas = QuotaBook(config.quotas, config.data_dir)
        self.limits = LimitBook(config.limits)
        self.policy.configure(self.quotas, self.limits)

    def health(self) -> dict[str, Any]:
        """The recording path's state, for /v1/omen/status."""
        return {"journal": "failing" if self._journal_failed else "ok", "recovered_streams": self.recovered}

    # ------------------------------------------------------------ queries (for the API and the CLI)

    async def flush(self) -> None:
        """Wait until every event emitted so far is in SQLite (read-your-writes for /v1/usage)."""
        await asyncio.wrap_future(self.store.flush())

    async def rollup(self, query: r.RollupQuery) -> dict[str, Any]:
        await self.flush()
        return await asyncio.to_thread(self.store.rollup, query)

    async def events(self, query: EventQuery) -> dict[str, Any]:
        await self.flush()
        return await asyncio.to_thread(self.store.events, query)
