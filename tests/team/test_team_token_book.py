"""The team's token book on a real PostgreSQL: what a serving instance reads, and what it costs."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import peewee

from omen_local import team_tokens
from omen_local.metering.pg_store import PgUsageStore


def _book_db(url: str, tmp_path: Path) -> peewee.Database:
    store = PgUsageStore(url, "cli", tmp_path)
    store.open()  # migrations: the token table is number 3
    return store.db


async def test_wrong_tokens_cost_the_database_a_few_reads_not_one_each(team_db: str, tmp_path: Path) -> None:
    db = _book_db(team_db, tmp_path)
    with db.connection_context():
        token = team_tokens.create(db, "dana", None, "laptop", None, by="cli")
    book = team_tokens.TeamTokens(team_db, "inst", poll_s=3600)  # no periodic read during the test
    await book.start()
    try:
        assert (await book.lookup(team_tokens.digest(token))) is not None  # the first read
        before = book.reads
        wrong = [team_tokens.digest(secrets.token_hex(16)) for _ in range(300)]
        found = await asyncio.gather(*(book.lookup(d) for d in wrong))
        assert found == [None] * 300
        assert book.reads - before <= 2  # coalesced: the read in flight and the next one
        ident = book.identify(team_tokens.digest(token))
        assert ident is not None and ident.user == "dana" and ident.label == "laptop"
    finally:
        await book.stop()


async def test_reserved_names_planted_in_the_book_are_ignored(team_db: str, tmp_path: Path) -> None:
    db = _book_db(team_db, tmp_path)
    planted = {name: "omen-" + secrets.token_hex(8) for name in ("owner", "local", " Owner ")}
    with db.connection_context():
        for name, tok in planted.items():  # written past the CLI's check, as an attacker with write access would
            db.execute_sql('INSERT INTO team_token (sha256, "user", prefix, created) VALUES (%s, %s, %s, 0)',
                           (team_tokens.digest(tok), name, tok[:9]))  # fmt: skip
    book = team_tokens.TeamTokens(team_db, "inst", poll_s=3600)
    await book.start()
    try:
        for tok in planted.values():
            assert await book.lookup(team_tokens.digest(tok)) is None
    finally:
        await book.stop()


async def test_the_last_known_good_rule_ends(team_db: str, tmp_path: Path) -> None:
    """Past ``offline_s`` without a successful read, team tokens are refused (an injected clock)."""
    db = _book_db(team_db, tmp_path)
    with db.connection_context():
        token = team_tokens.create(db, "erin", None, None, None, by="cli")
    now = [1000.0]
    book = team_tokens.TeamTokens(team_db, "inst", clock=lambda: now[0], poll_s=3600, offline_s=900)
    await book.start()
    try:
        sha = team_tokens.digest(token)
        assert await book.lookup(sha) is not None
        now[0] += 899
        assert book.identify(sha) is not None
        now[0] += 2  # no read succeeded for longer than the rule allows
        assert book.identify(sha) is None and book.health()["tokens"] == 0
    finally:
        await book.stop()
