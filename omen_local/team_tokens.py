"""Team tokens: client tokens valid on every instance of a team, kept in the team's PostgreSQL.

A team token is stored as ``tokens.json`` stores a local one: its SHA-256 only (the
token is shown once, by ``omen token create``), with its user, workspace, label and role.
A revoked token keeps its row (who, when) with ``revoked`` set.

Each instance holds the team's live tokens in memory, read in full every
:data:`POLL_S` seconds on a thread of its own (a team has hundreds of tokens, not
millions; one small query a second per instance), so the serving loop only looks a
digest up in a dict. A revocation on any instance is refused everywhere at the next
read, within about a second. A token the book does not know yet (just created on
another instance) asks for an early read, awaited by the request: reads are
coalesced and at least :data:`MIN_GAP_S` apart, so a flood of wrong tokens costs the
database at most a few reads a second, never one per request.

PostgreSQL unreachable: the last tokens read stay valid for :data:`OFFLINE_S` (the
documented last-known-good rule, docs/team.md), then team tokens are refused until it
answers again; local tokens (the owner's, ``tokens.json``) never depend on it. A read
that hangs (a stopped backend, a half-open connection: the server's statement_timeout
cannot fire) is abandoned after :data:`READ_TIMEOUT_S`: its socket is shut down, which
wakes the book's thread, and the next read opens a new connection; TCP keepalives and
``tcp_user_timeout`` bound a dead peer on the kernel's side too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import peewee

from .tokens import ROLES, Identity, new_token, reserved_user

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the book is read again: a revocation takes effect within about this
MIN_GAP_S = 0.2  # reads asked for by unknown tokens are at least this far apart
LOOKUP_WAIT_S = 3.0  # the longest a request with an unknown token waits for that read
OFFLINE_S = 60.0  # PostgreSQL away: the last tokens read stay valid this long, then are refused
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 2.0 * CONNECT_TIMEOUT_S  # a read not answered by then is abandoned (a hung backend)
# libpq's TCP settings: a peer gone silent is noticed in seconds, not the kernel's two hours.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1, "keepalives_count": 3,
              "tcp_user_timeout": 5000}

# The table (pg_store's migration 3 creates it, under the migration lock).
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS team_token (
    sha256 TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    workspace TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    revoked DOUBLE PRECISION,
    revoked_by TEXT
)
"""

_LIVE = 'SELECT sha256, "user", workspace, label, role FROM team_token WHERE revoked IS NULL'


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sql(db: peewee.Database, text: str, params: tuple[Any, ...] = ()) -> Any:
    return db.execute_sql(text, params)  # type: ignore[no-untyped-call]


def _identity(user: str, workspace: str, label: str, role: str) -> Identity | None:
    """A row as an identity; a reserved user name (owner, local) is never taken from the team's book."""
    if reserved_user(user or ""):
        return None
    return Identity(user or "unknown", workspace or None, label or None, role if role in ROLES else None)


# ---------------------------------------------------------------- the CLI's side (blocking)

ADMIN_URL_ENV = "OMEN_TEAM_ADMIN_URL"  # the team admin's URL for `omen token create/revoke`


def admin_db(url: str) -> peewee.Database:
    """The team admin's connection, which alone may write the book (docs/team.md: instances'
    role reads it only, so a teammate cannot make themselves a token for another user or role).
    No migrations from here: tables made by the admin's role would not be the instances'."""
    return peewee.PostgresqlDatabase(url, connect_timeout=CONNECT_TIMEOUT_S, application_name="omen token admin")


def insufficient_privilege(exc: BaseException) -> bool:
    """PostgreSQL refused a write for lack of privilege (SQLSTATE 42501)."""
    cause = exc.__cause__ or exc.__context__ or exc
    return getattr(cause, "pgcode", None) == "42501" or getattr(exc, "pgcode", None) == "42501"



def create(db: peewee.Database, user: str, workspace: str | None, label: str | None, role: str | None,
           by: str) -> str:
    """Add a team token for ``user``; return it (only its hash is stored)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    if reserved_user(user):
        raise ValueError(f"the user name {user.strip()!r} is reserved")
    token = new_token()
    with db.atomic():
        _sql(db, 'INSERT INTO team_token (sha256, "user", workspace, label, role, prefix, created, created_by) '
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
             (digest(token), user, workspace or "", label or "", role or "", token[:9], time.time(), by))
    return token


def listing(db: peewee.Database) -> list[dict[str, str]]:
    rows = _sql(db, 'SELECT "user", workspace, label, role, prefix, created, created_by FROM team_token '
                    "WHERE revoked IS NULL ORDER BY created").fetchall()
    return [
        {"user": u, "workspace": w, "label": lab, "role": role, "prefix": p,
         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c)), "created_by": by, "scope": "team"}
        for u, w, lab, role, p, c, by in rows
    ]  # fmt: skip


def revoke(db: peewee.Database, prefix_or_user: str, by: str) -> int:
    """Revoke the live team tokens whose prefix or user matches; return how many."""
    with db.atomic():
        cur = _sql(db, 'UPDATE team_token SET revoked = %s, revoked_by = %s WHERE revoked IS NULL '
                       'AND (prefix = %s OR "user" = %s)', (time.time(), by, prefix_or_user, prefix_or_user))
        return int(cur.rowcount)


# ---------------------------------------------------------------- the server's side


class TeamTokens:
    """The team's live tokens, as last read from PostgreSQL (see the module's docstring)."""

    def __init__(self, url: str, instance: str, *, clock: Callable[[], float] = time.monotonic,
                 poll_s: float = POLL_S, offline_s: float = OFFLINE_S) -> None:
        self.db = peewee.PostgresqlDatabase(
            url, connect_timeout=CONNECT_TIMEOUT_S, application_name=f"omen {instance} tokens"[:63], **KEEPALIVES
        )
        self.clock, self.poll_s, self.offline_s = clock, poll_s, offline_s
        # One thread: the connection is used from it alone, and at most one read is in flight.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omen-team-tokens")
        self._by_hash: dict[str, Identity] = {}
        self.reads = 0  # reads of the book made (successful or not)
        self.read_at: float | None = None  # clock time of the last successful read
        self.unreachable_since: float | None = None  # wall time, for the status
        self.last_error: str | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[dict[str, Identity]] | None = None  # the read in flight
        self._socket: int | None = None  # its connection's socket (set on the book's thread)
        self._stopped = False

    # ------------------------------------------------------------ lookups (serving loop)

    def identify(self, token_digest: str) -> Identity | None:
        """The identity of a live team token, from memory (no I/O); None once the book is too old."""
        if self.read_at is None or self.clock() - self.read_at > self.offline_s:
            return None
        return self._by_hash.get(token_digest)

    async def lookup(self, token_digest: str) -> Identity | None:
        """A token not in memory: wait (a bounded time) for a fresh read, then look again."""
        if self._task is None or self._wake is None:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOOKUP_WAIT_S):
                await asyncio.shield(waiter)
        return self.identify(token_digest)

    # ------------------------------------------------------------ reading the book

    def _read(self) -> dict[str, Identity]:
        """Blocking, on the book's thread: every live token."""
        try:
            if self.db.is_closed():
                self.db.connect()
                self._socket = self.db.connection().fileno()  # type: ignore[no-untyped-call]
            with self.db.atomic():  # one short transaction per read: the next one sees new rows
                _sql(self.db, f"SET LOCAL statement_timeout = {CONNECT_TIMEOUT_S * 1000}")  # a hung server
                rows = _sql(self.db, _LIVE).fetchall()
        except Exception:
            self._socket = None
            with contextlib.suppress(Exception):
                self.db.close()  # a new connection next time
            raise
        out = {}
        for sha, user, workspace, label, role in rows:
            ident = _identity(user, workspace, label, role)
            if ident is not None:
                out[sha] = ident
        return out

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        self.reads += 1
        self._reading = reading = loop.run_in_executor(self._executor, self._read)
        reading.add_done_callback(lambda f: f.cancelled() or f.exception())  # abandoned, its error is still seen
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                book = await asyncio.shield(reading)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"no answer within {READ_TIMEOUT_S:g} s")
                self._abandon()  # the thread returns; the next read connects again
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.unreachable_since is None:
                self.unreachable_since = time.time()
                log.error("the team's token book (PostgreSQL) cannot be read (%s): team tokens read before stay "
                          "valid for %d s, local tokens are not affected", exc, self.offline_s)
            return
        if self.unreachable_since is not None:
            log.warning("the team's token book (PostgreSQL) is read again")
            self.unreachable_since = None
        self._by_hash = book
        self.read_at = self.clock()

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            waiters, self._waiters = self._waiters, []
            self._wake.clear()
            started = loop.time()
            try:
                await self.refresh()
            finally:
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            gap = started + MIN_GAP_S - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)  # a rate bound on reads, not a synchronisation

    async def start(self) -> None:
        """Keep reading the book, from now on (without waiting: PostgreSQL may be away; local
        tokens work regardless, and a team token's first request waits for the first read)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="omen-team-tokens")

    def _abandon(self) -> None:
        """Wake the book's thread from a read that hangs: shut its socket down (the thread then
        sees a closed connection, closes it and is free). Only while that read is in flight."""
        fd = self._socket
        if fd is None or self._reading is None or self._reading.done():
            return
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    async def stop(self) -> None:
        """Never waits on PostgreSQL: a read in flight is abandoned, the close runs behind it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._stopped:
            return
        self._stopped = True
        self._abandon()
        self._executor.submit(self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        self._socket = None
        with contextlib.suppress(Exception):
            self.db.close()

    def health(self) -> dict[str, Any]:
        since = self.unreachable_since
        fresh = self.read_at is not None and self.clock() - self.read_at <= self.offline_s
        return {
            "state": "ok" if since is None and fresh else "unreachable" if since is not None else "not_read",
            "unreachable_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since is not None else None,
            "tokens": len(self._by_hash) if fresh else 0,
            "valid_until": None if since is None or self.read_at is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.offline_s - (self.clock() - self.read_at))),
            "last_error": self.last_error,
        }  # fmt: skip
