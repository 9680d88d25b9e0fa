"""The token book when its PostgreSQL backend hangs (SIGSTOP: a disk stall, a half-open
connection): the server's statement_timeout cannot fire, so the instance must give up on
the read itself. A revocation made meanwhile (on another connection) is honoured within
the read timeout plus a poll, the status says what happened, and stop() never blocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from omen_local import team_tokens

from .test_team_token_book import _book_db

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@contextlib.contextmanager
def _stopped_backend(db: peewee.Database, application: str) -> Iterator[None]:
    with db.connection_context():
        (pid,) = db.execute_sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s",  # type: ignore[no-untyped-call]
                                (application,)).fetchone()  # fmt: skip
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _until(check: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_revocation_is_honoured_while_the_books_backend_hangs(team_db: str, tmp_path: Path) -> None:
    db = _book_db(team_db, tmp_path)
    with db.connection_context():
        token = team_tokens.create(db, "dana", None, None, None, by="cli")
    book = team_tokens.TeamTokens(team_db, "inst-hang")
    await book.start()
    sha = team_tokens.digest(token)
    try:
        assert await book.lookup(sha) is not None
        with _stopped_backend(db, "omen inst-hang tokens"):
            with db.connection_context():
                assert team_tokens.revoke(db, "dana", by="admin") == 1
            within = team_tokens.READ_TIMEOUT_S + 3 * team_tokens.POLL_S + 5  # margin for a loaded machine
            assert await _until(lambda: book.identify(sha) is None, within), book.health()
            assert book.last_error is not None and "no answer" in book.last_error
            async with asyncio.timeout(5):
                await book.stop()  # returns although a read may be hung
    finally:
        await book.stop()


async def test_stop_does_not_wait_for_a_hung_read(team_db: str, tmp_path: Path) -> None:
    db = _book_db(team_db, tmp_path)
    book = team_tokens.TeamTokens(team_db, "inst-stop", poll_s=3600)
    await book.start()
    try:
        await book.lookup(team_tokens.digest("nobody"))  # the first read: the connection is open
        with _stopped_backend(db, "omen inst-stop tokens"):
            hung = asyncio.create_task(book.refresh())
            assert await _until(lambda: book._reading is not None and not book._reading.done(), 5)
            async with asyncio.timeout(team_tokens.READ_TIMEOUT_S / 2):  # before the read's own timeout
                await book.stop()
            async with asyncio.timeout(10):
                await hung  # the abandoned read ended (its socket was shut down)
            assert book.last_error is not None and book.unreachable_since is not None
    finally:
        await book.stop()
