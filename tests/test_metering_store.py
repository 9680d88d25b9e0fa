"""The usage store: rollups equal a brute-force sum, the journal replays, shutdown flushes."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from omen_local.config import load_config
from omen_local.metering import Metering, MeteringError, segment
from omen_local.metering import rollup as r
from omen_local.metering.journal import Journal
from omen_local.metering.meter import JOURNAL_DIR, USAGE_DB
from omen_local.metering.store import EventQuery, SqliteUsageStore
from omen_local.observe import AttemptProgress, AttemptStarted, UsageEvent
from omen_local.providers.base import Usage
from tests import metering_util as mu
from tests.conftest import Stack

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MODELS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"), ("ollama", "llama3.2:latest")]
OUTCOMES = ["ok"] * 8 + ["error", "cancelled", "budget_cut"]


def random_events(n: int, seed: int = 7) -> list[UsageEvent]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        provider, model = rnd.choice(MODELS)
        outcome = rnd.choice(OUTCOMES)
        prompt = rnd.randint(1, 5000)
        out.append(
            UsageEvent(
                attempt_id=f"req{i}.{rnd.choice([0, 0, 0, 1])}",
                request_id=f"req{i}",
                user=rnd.choice(["alice", "bob", "owner"]),
                workspace=rnd.choice([None, "acme", "lab"]),
                client=None,
                session=None,
                provider=provider,
                model=model,
                strategy="single",
                usage=Usage(prompt, rnd.randint(0, 900), rnd.randint(0, prompt), 0, rnd.randint(0, 50)),
                cost_usd=rnd.random() / 100,
                ttft_ms=None if outcome == "error" else rnd.lognormvariate(5, 1),
                total_ms=rnd.lognormvariate(6.5, 1.2),
                outcome=outcome,
                estimated=rnd.random() < 0.1,
                time=T0 + rnd.random() * 5 * r.DAY,
            )
        )
    return out


def brute_force(events: list[UsageEvent], q: r.RollupQuery) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[UsageEvent]] = defaultdict(list)
    for e in events:
        if not q.start <= e.time < q.end:
            continue
        if any(getattr(e, d) != v for d, v in q.filters.items()):
            continue
        key: tuple[Any, ...] = tuple(getattr(e, d) for d in q.dims)
        if q.time_key:
            unit = r.DAY if q.time_key == "day" else r.HOUR
            key += (r.format_period(q.time_key, int(e.time // unit)),)
        groups[key].append(e)
    out = {}
    for key, evs in groups.items():
        served = sorted(e.total_ms for e in evs if e.outcome in r.SERVED)
        out[key] = {
            "attempts": len(evs),
            "requests": sum(e.attempt_id.endswith(".0") for e in evs),
            "errors": sum(e.outcome == "error" for e in evs),
            "cancelled": sum(e.outcome == "cancelled" for e in evs),
            "budget_cut": sum(e.outcome == "budget_cut" for e in evs),
            "estimated": sum(e.estimated for e in evs),
            "prompt_tokens": sum(e.usage.prompt_tokens for e in evs),
            "completion_tokens": sum(e.usage.completion_tokens for e in evs),
            "cached_tokens": sum(e.usage.cached_tokens for e in evs),
            "reasoning_tokens": sum(e.usage.reasoning_tokens for e in evs),
            "cost_usd": sum(e.cost_usd for e in evs),
            "avg": sum(served) / len(served) if served else None,
            "p95": served[math.ceil(0.95 * len(served)) - 1] if served else None,
        }
    return out


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[SqliteUsageStore, list[UsageEvent]]:
    store = SqliteUsageStore(tmp_path_factory.mktemp("rollup") / "usage.db")
    store.open()
    events = sorted(random_events(4000), key=lambda e: e.time)  # as they arrive
    rnd = random.Random(3)
    i = 0
    with store.db.connection_context():
        while i < len(events) - 500:  # batches of every size: the folds must add up
            n = rnd.choice([1, 2, 17, 300])
            store.apply([("u", i + k + 1, e) for k, e in enumerate(events[i : i + n])])
            i += n
        store.compact()
        store.apply([("u", i + k + 1, e) for k, e in enumerate(events[i:])])  # a tail left unfolded
    assert store.last_id - store.rolled_id == len(events) - i
    return store, events


def test_folding_the_tail_changes_no_answer(tmp_path: Path) -> None:
    store = SqliteUsageStore(tmp_path / "usage.db")
    store.open()
    events = sorted(random_events(600, seed=5), key=lambda e: e.time)
    store.apply([("u", k + 1, e) for k, e in enumerate(events)])
    query = r.RollupQuery(T0 + 100, T0 + 4 * r.DAY, ("user", "model"), "day")
    before = store.rollup(query)
    assert store.rolled_id == 0
    store.compact()
    assert store.rolled_id == store.last_id == 600
    assert store.rollup(query) == before


def _queries() -> list[r.RollupQuery]:
    rnd = random.Random(11)
    out = [
        r.RollupQuery(T0, T0 + 5 * r.DAY),  # everything, aligned
        r.RollupQuery(T0, T0 + 5 * r.DAY, ("user", "workspace", "provider", "model"), "day"),
        r.RollupQuery(T0 + 1234.5, T0 + 3 * r.DAY + 999.25, ("provider",), "hour"),  # ragged edges
        r.RollupQuery(T0 + 600, T0 + 1200, ("user",)),  # inside one hour: raw events only
        r.RollupQuery(T0 - r.DAY, T0 + 10 * r.DAY, ("workspace",), None, {"user": "alice"}),
    ]
    for _ in range(40):
        a, b = sorted(rnd.uniform(T0 - 3600, T0 + 5 * r.DAY + 3600) for _ in range(2))
        if rnd.random() < 0.3:
            a, b = math.floor(a / r.HOUR) * r.HOUR, math.ceil(b / r.HOUR) * r.HOUR
        dims = tuple(d for d in r.DIMS if rnd.random() < 0.4)
        filters = {d: v for d, v in (("user", "bob"), ("workspace", "acme"), ("provider", "openai")) if rnd.random() < 0.2}
        out.append(r.RollupQuery(a, b, dims, rnd.choice([None, None, "day", "hour"]), filters))
    return out


@pytest.mark.parametrize("query", _queries(), ids=lambda q: f"{q.dims}-{q.time_key}-{sorted(q.filters)}")
def test_rollups_equal_a_brute_force_sum(filled: tuple[SqliteUsageStore, list[UsageEvent]], query: r.RollupQuery) -> None:
    store, events = filled
    expected = brute_force(events, query)
    got = store.rollup(query)
    rows = {tuple(row.get(d) for d in query.dims) + ((row[query.time_key],) if query.time_key else ()): row for row in got["data"]}
    assert set(rows) == set(expected)
    for key, want in expected.items():
        row = rows[key]
        for name in ("attempts", "requests", "errors", "cancelled", "budget_cut", "estimated", "prompt_tokens",
                     "completion_tokens", "cached_tokens", "reasoning_tokens"):  # fmt: skip
            assert row[name] == want[name], (key, name)
        assert row["cost_usd"] == pytest.approx(want["cost_usd"], rel=1e-9, abs=1e-9)
        if want["avg"] is None:
            assert row["latency_ms"] == {"avg": None, "p95": None}
        else:
            assert row["latency_ms"]["avg"] == pytest.approx(want["avg"], abs=0.06)
            lo, hi = r.bin_edges(r.lat_bin(want["p95"]))  # same log bin as the exact nearest-rank p95
            assert lo <= row["latency_ms"]["p95"] <= hi + 0.05
    assert got["total"]["attempts"] == sum(w["attempts"] for w in expected.values())


def test_hour_and_day_grains_agree(filled: tuple[SqliteUsageStore, list[UsageEvent]]) -> None:
    store, _ = filled
    by_day = store.rollup(r.RollupQuery(T0, T0 + 5 * r.DAY, ("model",), "day"))["data"]
    by_hour = store.rollup(r.RollupQuery(T0, T0 + 5 * r.DAY, ("model",), "hour"))["data"]
    day_cost: dict[tuple[str, str], float] = defaultdict(float)
    for row in by_hour:
        day_cost[(row["model"], row["hour"][:10])] += row["cost_usd"]
    assert {(row["model"], row["day"]): pytest.approx(row["cost_usd"]) for row in by_day} == day_cost


def test_events_page_newest_first_without_gaps(filled: tuple[SqliteUsageStore, list[UsageEvent]]) -> None:
    store, events = filled
    alice = [e for e in events if e.user == "alice" and e.provider == "openai"]
    seen: list[str] = []
    cursor = None
    while True:
        page = store.events(EventQuery(filters=(("user", "alice"), ("provider", "openai")), limit=97, before_id=cursor))
        seen += [row["attempt_id"] for row in page["data"]]
        if not page["has_more"]:
            break
        cursor = int(page["next_cursor"])
    assert seen == [e.attempt_id for e in reversed(alice)]
    first = store.events(EventQuery(start=T0, end=T0 + r.HOUR, limit=1000))["data"]
    assert {row["attempt_id"] for row in first} == {e.attempt_id for e in events if e.time < T0 + r.HOUR}


# ---------------------------------------------------------------- journal and recovery


def _event(i: int, **kw: Any) -> UsageEvent:
    base: dict[str, Any] = dict(
        attempt_id=f"r{i}.0", request_id=f"r{i}", user="alice", workspace=None, client=None, session=None,
        provider="openai", model="gpt-4o-mini", strategy="single", usage=Usage(100, 10), cost_usd=0.001,
        ttft_ms=5.0, total_ms=9.0, outcome="ok", time=T0 + i,
    )  # fmt: skip
    base.update(kw)
    return UsageEvent(**base)


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "written"])
def test_journal_rotates_replays_and_skips_a_torn_line(tmp_path: Path, mapped: bool, caplog: pytest.LogCaptureFixture) -> None:
    j = Journal(tmp_path / "j", segment_bytes=2000, mapped=mapped)
    j.start(1)
    for i in range(30):
        assert j.append("u", _event(i)) == i + 1
    segments = sorted((tmp_path / "j").iterdir())
    assert len(segments) > 3
    for finished in segments[:-1]:  # cut to their records
        assert finished.read_bytes().endswith(b"}]\n")
    live = segments[-1].read_bytes()
    if mapped:
        assert len(live) == 2000 and live.endswith(b"\0")  # reserved ahead, zeros where nothing is written yet
        torn = b'[31,"u",{"attempt_id":"cut' + bytes(40) + b'}]\n'  # a copy cut by kill -9: a hole in the middle
    else:
        torn = b'[31,"u",{"attempt_id":"cut'  # a write cut by kill -9
    with segments[-1].open("r+b") as f:
        f.seek(live.index(0) if mapped else len(live))
        f.write(torn)
    caplog.clear()
    replayed = list(Journal(tmp_path / "j").replay(after=10))
    assert [seq for seq, _, _ in replayed] == list(range(11, 31))
    assert replayed[0][2] == _event(10)
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1  # the torn line; zeros are not lines
    j.release(15)  # segments wholly at or below 15 go; the rest stay
    first, _, _ = next(iter(Journal(tmp_path / "j").replay(after=0)))
    assert 1 < first <= 16
    j.close(committed=30)
    (left,) = (tmp_path / "j").iterdir()  # an empty segment named for the next number
    assert left.name == f"{31:020d}.jsonl" and left.read_bytes() == b"" and left.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "written"])
def test_a_record_larger_than_a_segment_first_in_a_fresh_one_is_kept(tmp_path: Path, mapped: bool) -> None:
    j = Journal(tmp_path / "j", segment_bytes=600, mapped=mapped)
    j.start(5)
    big = _event(5, error="x" * 2000)
    assert j.append("u", big) == 5  # larger than the segment opened at start
    assert j.append("u", _event(6)) == 6 and j.append("u", _event(7)) == 7
    j.release(4)  # nothing is committed past what came before: every record stays
    assert [(seq, r.attempt_id) for seq, _, r in j.replay(0)] == [(5, "r5.0"), (6, "r6.0"), (7, "r7.0")]
    assert [seq for seq, _, _ in j.read(4, 7)] == [5, 6, 7]
    j.close(committed=4)
    assert [seq for seq, _, _ in Journal(tmp_path / "j").replay(0)] == [5, 6, 7]


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "written"])
def test_after_a_clean_stop_a_resumed_journal_goes_on_numbering(tmp_path: Path, mapped: bool) -> None:
    # A team server whose store is unreachable at start resumes: its store has committed up
    # to 5 already, so numbers must not start again at 1 (the store would skip them as done).
    j = Journal(tmp_path / "j", mapped=mapped)
    j.start(1)
    for i in range(5):
        j.append("u", _event(i))
    j.close(committed=5)
    again = Journal(tmp_path / "j", mapped=mapped)
    assert again.resume() == 5
    assert again.append("u", _event(5)) == 6
    assert [seq for seq, _, _ in again.read(5, 6)] == [6]
    again.release(5)
    assert [seq for seq, _, _ in again.replay(0)] == [6]


def test_segments_are_mapped_only_where_a_full_disk_cannot_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform.startswith("linux"):
        named = subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True, check=True)
        magic = int(named.stdout.strip(), 16)
        assert segment.fs_magic(tmp_path) == magic  # statfs read right, checked against coreutils
        assert segment.mappable(tmp_path) == (magic in segment.IN_PLACE)
    for found in (0x9123683E, 0x2FC12FC1, None):  # btrfs, ZFS (copy-on-write: SIGBUS on a full disk), unreadable
        monkeypatch.setattr(segment, "fs_magic", lambda path, found=found: found)
        j = Journal(tmp_path / f"j{found}")
        j.start(1)
        assert j.mapped is False
        assert [p.stat().st_size for p in (tmp_path / f"j{found}").iterdir()] == [0]  # no space reserved ahead
        j.append("u", _event(1))
        assert [seq for seq, _, _ in j.replay(0)] == [1]
        j.close(committed=1)


class _NoSpace:
    """posix_fallocate as on a full disk, or as on a file system that cannot reserve (musl on ext3)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, errno_: int = errno.ENOSPC) -> None:
        self.on, self.errno = False, errno_
        monkeypatch.setattr(segment.os, "posix_fallocate", self, raising=False)

    def __call__(self, fd: int, offset: int, size: int) -> None:
        if self.on:
            raise OSError(self.errno, os.strerror(self.errno))
        os.ftruncate(fd, offset + size)  # (the blocks of a test file: nothing to reserve)


def test_a_full_disk_never_loses_the_next_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _NoSpace(monkeypatch)
    j = Journal(tmp_path / "j", mapped=True)
    j.start(1)
    for i in range(3):
        j.append("u", _event(i))
    j.close(committed=3)
    full.on = True
    for _ in range(2):  # started again and again on the full disk, nothing appended
        again = Journal(tmp_path / "j", mapped=True)
        assert again.resume() == 3 and again.open_error is not None
        again.close(committed=3)
    left = list((tmp_path / "j").iterdir())
    assert [(p.name, p.read_bytes()) for p in left] == [(f"{4:020d}.jsonl", b"")]
    again = Journal(tmp_path / "j", mapped=True)
    again.start(4)  # the SQLite start on the full disk: the number stays on disk
    assert [p.name for p in (tmp_path / "j").iterdir()] == [f"{4:020d}.jsonl"]


def test_a_stop_that_cannot_write_the_next_number_keeps_the_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j")
    j.start(1)
    for i in range(3):
        j.append("u", _event(i))
    real_open = os.open
    marker = str(tmp_path / "j" / f"{4:020d}.jsonl")

    def refuse_marker(path: Any, *args: Any, **kw: Any) -> int:
        if str(path) == marker:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", refuse_marker)
    j.close(committed=3)  # all committed, but the number could not be written: the segments keep it
    monkeypatch.undo()
    assert Journal(tmp_path / "j").resume() == 3


def test_a_journal_begun_anew_is_marked_and_a_full_disk_does_not_stop_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j")
    assert j.resume() == 0 and j.unnumbered  # nothing says where the numbers stand
    j.append("u", _event(1))
    j.close(committed=0)
    assert Journal(tmp_path / "j").resume() == 1 and Journal(tmp_path / "j").unnumbered  # kept until shipped
    real_open = os.open

    def no_mark(path: Any, *args: Any, **kw: Any) -> int:
        if str(path).endswith("unnumbered"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", no_mark)
    k = Journal(tmp_path / "k")
    assert k.resume() == 0 and not k.unnumbered  # logged; it serves
    assert k.append("u", _event(1)) == 1


def test_a_file_system_that_cannot_reserve_gets_written_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _NoSpace(monkeypatch, errno.EOPNOTSUPP).on = True
    j = Journal(tmp_path / "j", mapped=True)
    j.start(1)
    assert j.mapped is False and j.open_error is None
    assert j.append("u", _event(1)) == 1
    assert [seq for seq, _, _ in Journal(tmp_path / "j").replay(0)] == [1]


def test_a_leftover_segment_is_cleared_before_records_go_in(tmp_path: Path) -> None:
    # A kill -9 right after a rotation leaves the next mapped segment: 1 MiB of zeros. A
    # written journal that resumes there must not append after the zeros (readers stop at them).
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / f"{4:020d}.jsonl").write_bytes(bytes(1 << 20))
    j = Journal(tmp_path / "j", mapped=False)
    assert j.resume() == 3
    assert j.append("u", _event(4)) == 4
    assert [seq for seq, _, _ in Journal(tmp_path / "j").replay(0)] == [4]


def test_a_start_that_cannot_write_the_new_number_keeps_the_old_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j")
    j.start(1)
    j.append("u", _event(1))
    j.close(committed=0)

    def no_files(*args: Any, **kw: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(segment.os, "open", no_files)
    again = Journal(tmp_path / "j")
    again.start(2)  # record 1 is committed; but with nothing new on disk, its segment is what says "2"
    assert again.open_error is not None
    monkeypatch.undo()
    assert Journal(tmp_path / "j").resume() == 1


async def test_restart_replays_the_journal_and_charges_cut_streams(tmp_path: Path) -> None:
    config = load_config(None, overrides={"storage": {"data_dir": str(tmp_path)}})
    # What a killed server leaves: journal records SQLite never got.
    now = time.time()
    j = Journal(tmp_path / JOURNAL_DIR)
    j.start(1)
    j.append("u", _event(1, user="bob", time=now - 5))
    started = AttemptStarted("r2.0", "r2", "bob", "acme", "sdk", None, "openai", "gpt-4o-mini", "single", 40, time=now - 4)
    j.append("s", started)
    j.append("p", AttemptProgress("r2.0", 4000, time=now - 1))
    j.append("s", AttemptStarted("r3.0", "r3", "carol", None, None, None, "openai", "gpt-4o-mini", "single", 7))
    j.append("u", _event(3, user="carol", outcome="ok"))  # r3 finished: not cut
    j.close(committed=0)

    metering = Metering(config)
    await metering.start()
    try:
        assert metering.recovered == 1
        page = metering.store.events(EventQuery(limit=10))
        by_id = {e["attempt_id"]: e for e in page["data"]}
        assert set(by_id) == {"r1.0", "r2.0", "r3.0"}
        cut = by_id["r2.0"]
        assert cut["outcome"] == "cancelled" and cut["estimated"] and "stopped" in cut["error"]
        assert (cut["prompt_tokens"], cut["completion_tokens"]) == (40, 1000)  # 4000 chars streamed
        assert cut["cost_usd"] == pytest.approx((40 * 0.15 + 1000 * 0.60) * 1e-6)
        assert cut["total_ms"] == pytest.approx(3000) and cut["workspace"] == "acme"
        bob = ("user", "bob")  # the ledger loads bob's spend when a limit first needs it
        await metering.ledger.reserve("check", [(bob, {"monthly_usd": 1.0})], 0.0, 0)
        metering.ledger.settle("check", 0.0, 0)
        assert metering.ledger.used(bob)[1] == pytest.approx(cut["cost_usd"] + 0.001)
        with pytest.raises(MeteringError, match="another OMEN server"):
            await Metering(config).start()
    finally:
        await metering.stop()
    again = Metering(config)  # nothing is replayed twice
    await again.start()
    try:
        assert again.recovered == 0
        assert len(again.store.events(EventQuery(limit=10))["data"]) == 3
    finally:
        await again.stop()


async def test_clean_shutdown_commits_everything_and_empties_the_journal(stack: Stack) -> None:
    for _ in range(5):
        await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    stream = await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG, stream=True)  # type: ignore[arg-type]
    async for _ in stream:
        pass
    await stack.service.stop()
    store = SqliteUsageStore(stack.data_dir / USAGE_DB)
    store.open()
    events = store.events(EventQuery(limit=100))["data"]
    assert len(events) == 6 and all(e["outcome"] == "ok" for e in events)
    assert store.open_attempts() == []
    assert [p.read_bytes() for p in (stack.data_dir / JOURNAL_DIR).iterdir()] == [b""]  # only the next number's empty segment
    store.close()


def test_event_rows_bind_without_sqlite_adaptation() -> None:
    """Rows hold exact ints, floats, strs and None (None through a registered adapter): anything
    else makes sqlite3 raise and clear an AttributeError per value, per event (issue 10)."""
    import sqlite3

    import orjson

    from omen_local.config import StrategyName
    from omen_local.metering.store import EVENT_COLUMNS, event_row
    from omen_local.observe import Outcome

    row = event_row(_event(1, outcome=Outcome.OK, estimated=True, error=None, ttft_ms=None, strategy=StrategyName.SINGLE))
    assert {type(v) for v in row} <= {int, float, str, type(None)}
    assert row[EVENT_COLUMNS.index("outcome")] == "ok"
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a, b)")
    db.execute("INSERT INTO t VALUES (?, ?)", (None, True))
    assert db.execute("SELECT typeof(a), b FROM t").fetchall() == [("null", 1)]
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    # Journaled records have a __dict__ (orjson's fast path; without one it raises and falls back).
    assert not hasattr(UsageEvent, "__slots__") and not hasattr(Usage, "__slots__")
    assert orjson.loads(orjson.dumps(_event(2)))["usage"]["prompt_tokens"] == 100


def test_a_store_from_before_asked_names_gains_the_column(tmp_path: Path) -> None:
    """usage_event.asked (the model name a client sent when a pattern mapped it) is added to older stores."""
    import sqlite3

    store = SqliteUsageStore(tmp_path / "usage.db")
    store.open()
    store.close()
    with sqlite3.connect(tmp_path / "usage.db") as db:
        db.execute("ALTER TABLE usage_event DROP COLUMN asked")
    again = SqliteUsageStore(tmp_path / "usage.db")
    again.open()
    event = dataclasses.replace(random_events(1, seed=3)[0], asked="claude-opus-5-5")
    again.apply([("u", 1, event)])
    (row,) = again.events(EventQuery(limit=5))["data"]
    assert row["asked_model"] == "claude-opus-5-5" and row["model"] == event.model
    again.close()
