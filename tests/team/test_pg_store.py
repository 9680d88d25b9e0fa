"""The usage store on a real PostgreSQL: the SQLite store's answers, several writers, exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from omen_local.metering import rollup as r
from omen_local.metering.pg_store import SCHEMA_VERSION, PgUsageStore
from omen_local.metering.store import EventQuery, SqliteUsageStore
from omen_local.observe import UsageEvent
from tests.test_metering_store import T0, _queries, random_events

from .servers import start_postgres


def _ship(store: PgUsageStore, events: list[UsageEvent], batch: int) -> None:
    with store.db.connection_context():
        for i in range(0, len(events), batch):
            store.commit([("u", i + k + 1, e) for k, e in enumerate(events[i : i + batch])])


def _rows(result: dict[str, object]) -> list[object]:
    data = result["data"]
    assert isinstance(data, list)
    return sorted(data, key=repr)


def test_three_writers_answer_like_sqlite(team_db: str, tmp_path: Path) -> None:
    events = sorted(random_events(3000, seed=9), key=lambda e: e.time)
    stores = [PgUsageStore(team_db, f"laptop-{i}", tmp_path) for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # three instances start together
        assert list(pool.map(lambda s: s.open(), stores)) == [0, 0, 0]
    assert stores[0].schema_version() == SCHEMA_VERSION
    shares = [events[i::3] for i in range(3)]
    barrier = threading.Barrier(3)

    def write(i: int) -> None:
        barrier.wait()
        _ship(stores[i], shares[i], batch=[7, 50, 333][i])

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(write, range(3)))
    stores[1].compact()
    lite = SqliteUsageStore(tmp_path / "usage.db")
    lite.open()
    lite.apply([("u", k + 1, e) for k, e in enumerate(events)], fold=True)
    for query in _queries()[:20]:
        pg, sq = stores[0].rollup(query), lite.rollup(query)
        assert len(pg["data"]) == len(sq["data"])
        for a, b in zip(_rows(pg), _rows(sq), strict=True):
            assert a.keys() == b.keys()  # type: ignore[attr-defined]
            for k in a:  # type: ignore[attr-defined]
                if isinstance(a[k], float):  # type: ignore[index]
                    assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k  # type: ignore[index]
                else:
                    assert a[k] == b[k], k  # type: ignore[index]
    by_instance = stores[2].by_instance(T0 - r.DAY, T0 + 10 * r.DAY, None)
    per = {}
    for row in by_instance:
        per[row["instance"]] = per.get(row["instance"], 0) + row["attempts"]
    assert per == {f"laptop-{i}": len(shares[i]) for i in range(3)}
    assert [s.committed for s in stores] == [len(s) for s in shares]  # each instance's own journal position
    # Spend per scope (the quota ledger's reload) agrees too.
    pg_spend = {k[:3]: k[3:] for k in stores[0].spend(int(T0 // r.DAY))}
    lite_spend = {k[:3]: k[3:] for k in lite.spend(int(T0 // r.DAY))}
    assert pg_spend.keys() == lite_spend.keys() and len(pg_spend) > 10
    for key, (usd, tokens) in lite_spend.items():
        assert pg_spend[key] == (pytest.approx(usd), tokens)
    alice = stores[0].spend_of("user", "alice", int(T0 // r.DAY))
    assert [(d, t) for d, _, t in alice] == [(d, t) for d, _, t in lite.spend_of("user", "alice", int(T0 // r.DAY))]
    for s in stores:
        s.close()
    lite.close()


def test_a_journal_shipped_twice_counts_once(team_db: str, tmp_path: Path) -> None:
    events = random_events(200, seed=4)
    store = PgUsageStore(team_db, "alice@box", tmp_path)
    store.open()
    _ship(store, events, 50)
    again = PgUsageStore(team_db, "alice@box", tmp_path)  # a restart that replays its journal from 0
    again.open()
    _ship(again, events, 64)
    again.compact()
    total = again.rollup(r.RollupQuery(T0 - r.DAY, T0 + 10 * r.DAY))["total"]
    assert total["attempts"] == 200
    odd = random_events(1, seed=99)[0]
    odd.attempt_id, odd.request_id, odd.client = "odd.0", "odd", "probe\x00\udcff"  # NUL, lone surrogate
    _ship(again, [odd], 1)
    assert again.rejected == 0
    page = again.events(EventQuery(filters=(("request_id", "odd"),)))["data"]
    assert page[0]["client"] == "probe\ufffd\ufffd"
    assert total["cost_usd"] == pytest.approx(sum(e.cost_usd for e in events))
    store.close()
    again.close()


def test_the_books_are_named_once_and_remembered_for_a_start_while_postgres_is_away(
    team_db: str, postgres: Any, tmp_path: Path
) -> None:
    """Every instance opening the same database reads the same books id (the first wrote it,
    whoever that was); each keeps it, user-only, for a start while PostgreSQL is away, and
    only for that database."""
    racers = [PgUsageStore(team_db, f"inst-{i}", tmp_path / f"d{i}") for i in range(4)]
    for i in range(4):
        (tmp_path / f"d{i}").mkdir()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: s.open(), racers))
    ids = {s.team_id for s in racers}
    assert len(ids) == 1 and None not in ids, ids
    kept = tmp_path / "d0" / "team-books.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    password = urlsplit(team_db).password
    assert password and password not in kept.read_text()  # the URL kept without it
    later = PgUsageStore(team_db, "inst-0", tmp_path / "d0")  # not opened: as when PostgreSQL is away
    assert later.team_id == racers[0].team_id
    optioned = PgUsageStore(team_db + "?connect_timeout=7&sslmode=disable", "inst-0", tmp_path / "d0")
    assert optioned.team_id == racers[0].team_id  # another option, the same database
    other = PgUsageStore(postgres.create_db(f"omen_books_{id(later)}"), "inst-0", tmp_path / "d0")
    assert other.team_id is None  # another database: its books are not known until it answers
    other.open()
    assert other.team_id not in (None, racers[0].team_id)
    for store in (*racers, other):
        store.close()


def test_postgres_away_keeps_records_and_ships_them_once_back(tmp_path: Path) -> None:
    """The writer keeps a batch while PostgreSQL is stopped, and commits it on a new connection once it is back."""
    with tempfile.TemporaryDirectory(prefix="omen-pg-own-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            store = PgUsageStore(pg.create_db("away"), "bob@box", tmp_path)
            store.open()
            store.start_writer()
            events = random_events(300, seed=2)
            for k, e in enumerate(events[:100]):
                store.submit("u", k + 1, e)
            store.flush().result(timeout=30)
            pg.stop()
            for k, e in enumerate(events[100:], 101):
                store.submit("u", k, e)
            with pytest.raises(Exception, match="usage could not be written"):
                store.flush().result(timeout=30)
            assert store.health()["state"] == "failing"
            pg.start()
            deadline = 60.0
            fut = store.flush()
            while True:  # each flush fails while a commit attempt fails; the writer retries with a pause
                try:
                    fut.result(timeout=deadline)
                    break
                except concurrent.futures.TimeoutError:
                    raise
                except Exception:
                    fut = store.flush()
            assert store.health()["state"] == "ok"
            assert store.rejected == 0 and store.committed == 300
            total = store.rollup(r.RollupQuery(T0 - r.DAY, T0 + 10 * r.DAY))["total"]
            assert total["attempts"] == 300
            store.close()
        finally:
            if pg.running():
                pg.stop("immediate")


async def _flushed(m: Any) -> None:
    """Flush once PostgreSQL answers again (a flush fails while the writer's attempts fail)."""
    loop_deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            await m.flush()
            return
        except Exception:
            assert asyncio.get_running_loop().time() < loop_deadline
            await asyncio.sleep(0.1)  # polling the store's own retry: no event to wait on across processes


async def _run_while_away(cfg: Path, pg: Any, events: list[UsageEvent], start: int, end: int) -> None:
    """A run that starts with PostgreSQL away and records ``events[start:end]``; PostgreSQL
    comes back; then every event up to ``end`` is in the store, each once."""
    from omen_local.config import load_config
    from omen_local.metering import Metering

    pg.stop()
    m = Metering(load_config(cfg))
    await m.start()
    for e in events[start:end]:
        m.record(e)
    pg.start()
    await _flushed(m)
    total = (await m.rollup(r.RollupQuery(T0 - r.DAY, T0 + 10 * r.DAY)))["total"]
    assert total["attempts"] == end
    assert total["cost_usd"] == pytest.approx(sum(e.cost_usd for e in events[:end]))
    await m.stop()


async def test_postgres_away_at_start_serves_and_ships_the_journal_when_back(tmp_path: Path) -> None:
    """An instance starts while PostgreSQL is down: usage is journaled, then shipped once, without a restart."""
    from omen_local.config import load_config
    from omen_local.metering import Metering

    with tempfile.TemporaryDirectory(prefix="omen-pg-own-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            url = pg.create_db("late")
            pg.stop()
            cfg = tmp_path / "config.toml"
            cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[team]\ndatabase_url = "{url}"\ninstance = "late"\n')
            events = random_events(160, seed=8)
            # First run: PostgreSQL never answers; it stops with everything in its journal.
            m = Metering(load_config(cfg))
            await m.start()
            for e in events[:60]:
                m.record(e)
            assert m.health()["team"]["database"]["state"] in ("ok", "unreachable")
            await m.stop()
            assert list((tmp_path / "data" / "usage-journal").glob("*.jsonl"))
            # Second run, still down at start; PostgreSQL comes back while it serves.
            m = Metering(load_config(cfg))
            await m.start()
            for e in events[60:120]:
                m.record(e)
            pg.start()
            await _flushed(m)
            total = (await m.rollup(r.RollupQuery(T0 - r.DAY, T0 + 10 * r.DAY)))["total"]
            assert total["attempts"] == 120
            assert total["cost_usd"] == pytest.approx(sum(e.cost_usd for e in events[:120]))
            assert m.health()["team"]["database"]["state"] == "ok"
            await m.stop()
            journal = tmp_path / "data" / "usage-journal"
            assert [p.read_bytes() for p in journal.glob("*.jsonl")] == [b""]  # all shipped; the next number kept
            # Third run after that clean stop, PostgreSQL away again: the numbers go on from
            # where they stopped (were they to start at 1 again, the store would skip them as shipped).
            await _run_while_away(cfg, pg, events, 120, 140)
            # Fourth run: the journal folder is gone (deleted, or a backup without it), PostgreSQL
            # away at start. Its numbers start below what PostgreSQL holds for this instance: the
            # new records are shipped all the same, and the mismatch is logged.
            shutil.rmtree(journal)
            await _run_while_away(cfg, pg, events, 140, 160)
        finally:
            if pg.running():
                pg.stop("immediate")


@pytest.mark.parametrize("lost_run", [5, 30], ids=["fewer-than-shipped", "more-than-shipped"])
@pytest.mark.parametrize("store_at_next_start", ["up", "away"])
async def test_a_lost_journal_whose_run_never_reached_postgres_is_shipped_later(
    tmp_path: Path, store_at_next_start: str, lost_run: int
) -> None:
    """The journal folder is lost, a run with PostgreSQL away numbers its records from 1 and
    stops before PostgreSQL returns; PostgreSQL holds numbers up to 20 for the instance. The
    next start (PostgreSQL up, or away and back later) ships every one of them, whether the
    lost run's numbers stayed below 20 or went past."""
    from omen_local.config import load_config
    from omen_local.metering import Metering

    with tempfile.TemporaryDirectory(prefix="omen-pg-lost-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            url = pg.create_db("lost")
            cfg = tmp_path / "config.toml"
            cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[team]\ndatabase_url = "{url}"\ninstance = "lost"\n')
            events = random_events(20 + lost_run, seed=9)
            m = Metering(load_config(cfg))
            await m.start()
            for e in events[:20]:
                m.record(e)
            await _flushed(m)
            await m.stop()
            shutil.rmtree(tmp_path / "data" / "usage-journal")
            pg.stop()
            m = Metering(load_config(cfg))
            await m.start()  # away: the journal begins anew, numbered from 1
            for e in events[20:]:
                m.record(e)
            await m.stop()  # before PostgreSQL is back
            if store_at_next_start == "up":
                pg.start()
            m = Metering(load_config(cfg))
            await m.start()
            if store_at_next_start == "away":
                pg.start()
            await _flushed(m)
            total = (await m.rollup(r.RollupQuery(T0 - r.DAY, T0 + 10 * r.DAY)))["total"]
            assert total["attempts"] == 20 + lost_run
            assert total["cost_usd"] == pytest.approx(sum(e.cost_usd for e in events))
            assert not m.journal.unnumbered  # shipped: the journal's numbers are the store's again
            await m.stop()
        finally:
            if pg.running():
                pg.stop("immediate")
