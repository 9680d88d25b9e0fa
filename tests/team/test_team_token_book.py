"""The team's token book on a real PostgreSQL: what a serving instance reads, and what it costs."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import peewee

from omen_local import team_tokens
from omen_local.metering.pg_store import PgUsageStore

from .servers import Postgres
from .test_team_tokens import _cli

_roles = iter(range(1, 1_000_000))


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


def _run(url: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


async def test_only_the_admin_role_writes_the_book_and_instances_honour_what_it_writes(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The privilege split of docs/team.md, with two real roles: every laptop's role reads the
    book only, so `omen token create` there fails with the fix named; the admin's URL writes it,
    and instances read and honour (and stop honouring) what it wrote."""
    n = next(_roles)
    inst, admin, dbname = f"omen_inst{n}", f"omen_admin{n}", f"omen_split{n}"
    _run(postgres.url(), f"CREATE ROLE {inst} LOGIN PASSWORD 'inst-pw'", f"CREATE ROLE {admin} LOGIN PASSWORD 'admin-pw'",
         f"CREATE DATABASE {dbname} OWNER {admin}")  # fmt: skip
    superuser = postgres.url(dbname)
    _run(superuser, f"GRANT CONNECT ON DATABASE {dbname} TO {inst}", f"GRANT USAGE, CREATE ON SCHEMA public TO {inst}")
    inst_url = f"postgresql://{inst}:inst-pw@127.0.0.1:{postgres.port}/{dbname}"
    admin_url = f"postgresql://{admin}:admin-pw@127.0.0.1:{postgres.port}/{dbname}"
    _book_db(inst_url, tmp_path / "first")  # the first instance's start: its migrations make the tables
    _run(superuser, f"ALTER TABLE team_token OWNER TO {admin}", f"REVOKE ALL ON team_token FROM {inst}",
         f"GRANT SELECT ON team_token TO {inst}")  # the docs' SQL, after the first start  # fmt: skip
    config = tmp_path / "laptop" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "laptop" / "data"}"\n'
                      f'[team]\ndatabase_url = "{inst_url}"\ninstance = "eve-laptop"\n', encoding="utf-8")  # fmt: skip

    code, out, err = await _cli(config, "create", "--user", "ceo", "--role", "team-admin")
    assert code == 1 and out.strip() == "", out
    assert "may not write the team's token book" in err and "--admin-url" in err and "OMEN_TEAM_ADMIN_URL" in err, err
    code, _, err = await _cli(config, "create", "--user", "bob", "--admin-url", admin_url)
    assert code == 0, err
    code, out, err = await _cli(config, "create", "--user", "carol", env={"OMEN_TEAM_ADMIN_URL": admin_url})
    assert code == 0, err
    carol = out.strip().splitlines()[-1]
    code, out, _ = await _cli(config, "list")  # instances still read the book
    assert code == 0 and "user=bob" in out and "user=carol" in out and "user=ceo" not in out

    book = team_tokens.TeamTokens(inst_url, "eve-laptop", poll_s=3600)
    await book.start()
    try:
        ident = await book.lookup(team_tokens.digest(carol))
        assert ident is not None and ident.user == "carol"
        code, _, err = await _cli(config, "revoke", "--user", "carol")  # a teammate cannot revoke either
        assert code == 1 and "--admin-url" in err, err
        assert book.identify(team_tokens.digest(carol)) is not None
        code, _, err = await _cli(config, "revoke", "--user", "carol", "--admin-url", admin_url)
        assert code == 0, err
        await book.refresh()
        assert book.identify(team_tokens.digest(carol)) is None
    finally:
        await book.stop()
