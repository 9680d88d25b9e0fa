"""The usage writer under faults: bounded, loud, honest flushes, nothing acknowledged lost.

A store that starts failing (``database or disk is full``) and recovers; a writer
thread that dies; a journal that cannot be written; records whose content the journal's
encoder or SQLite refuse (a lone surrogate from a header byte, a NaN). After each, the
rows in usage.db are counted against the events emitted.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omen_local.caller import Caller
from omen_local.config import Config, load_config
from omen_local.errors import OmenError
from omen_local.metering import Metering
from omen_local.metering import segment as segment_mod
from omen_local.metering.meter import JOURNAL_DIR, USAGE_DB
from omen_local.metering.store import REJECTED_FILE, SqliteUsageStore
from omen_local.observe import AttemptStarted, UsageEvent
from omen_local.policy import CostBound
from omen_local.providers.base import Usage
from tests import metering_util as mu
from tests.conftest import Stack
from tests.waiting import until

FULL = "database or disk is full"


class FlakyStore(SqliteUsageStore):
    """A real SQLite store whose commits fail while ``broken`` (as on a full disk)."""

    broken = False

    def _apply(self, *args: Any, **kwargs: Any) -> None:
        if self.broken:
            raise sqlite3.OperationalError(FULL)
        super()._apply(*args, **kwargs)


def _event(i: int, **kw: Any) -> UsageEvent:
    base: dict[str, Any] = dict(
        attempt_id=f"r{i}.0", request_id=f"r{i}", user="alice", workspace=None, client="sdk", session=None,
        provider="openai", model="gpt-4o-mini", strategy="single", usage=Usage(100, 10), cost_usd=0.001,
        ttft_ms=5.0, total_ms=9.0, outcome="ok", time=time.time(),
    )  # fmt: skip
    base.update(kw)
    return UsageEvent(**base)


def _rows(data_dir: Path) -> list[tuple[str, str | None, float]]:
    with sqlite3.connect(data_dir / USAGE_DB) as db:
        return list(db.execute("SELECT attempt_id, client, cost_usd FROM usage_event ORDER BY id"))


def _config(tmp_path: Path) -> Config:
    return load_config(None, overrides={"storage": {"data_dir": str(tmp_path)}})


async def _metering(
    tmp_path: Path, max_queue: int = 50, segment_bytes: int | None = None, mapped: bool | None = None
) -> tuple[Metering, FlakyStore]:
    store = FlakyStore(tmp_path / USAGE_DB, max_queue=max_queue)
    metering = Metering(_config(tmp_path), store=store)
    if segment_bytes is not None:
        metering.journal.segment_bytes = segment_bytes
    metering.journal.mapped = mapped
    await metering.start()
    return metering, store


@pytest.mark.parametrize("segment_bytes", [None, 4096], ids=["one-segment", "many-segments"])
async def test_a_failing_store_is_bounded_loud_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, segment_bytes: int | None
) -> None:
    metering, store = await _metering(tmp_path, max_queue=50, segment_bytes=segment_bytes)
    try:
        for i in range(30):
            metering.record(_event(i))
        await metering.flush()
        assert len(_rows(tmp_path)) == 30

        store.broken = True
        emitted = 30
        for _ in range(2):  # every flush while failing fails, in the error shape, never "done"
            metering.record(_event(emitted))
            emitted += 1
            with pytest.raises(OmenError) as err:
                await metering.flush()
            assert err.value.status == 503 and err.value.code == "usage_store_unavailable"
            assert FULL in err.value.message
        for i in range(emitted, 330):  # six times what memory may hold
            metering.record(_event(i))
            emitted += 1
            assert store._queue.qsize() <= 50 + 2  # (+ the writer's wake-up tokens)
            if i % 50 == 0:
                await asyncio.sleep(0)
        assert metering.health()["writer"]["journal_only"] > 0  # the rest waits in the journal
        if segment_bytes is not None:  # read back across segments, released as they are committed
            assert len(list((tmp_path / JOURNAL_DIR).iterdir())) > 10
        health = metering.health()
        assert health["state"] == "failing" and health["writer"]["state"] == "failing"
        assert FULL in health["writer"]["last_error"] and health["writer"]["failures"] >= 2
        assert health["writer"]["lag_s"] >= 0 and health["writer"]["failing_since"]
        logged = [r for r in caplog.records if "cannot write usage records" in r.getMessage()]
        assert len(logged) == 1 and logged[0].levelno == logging.ERROR  # once per episode
        assert len(_rows(tmp_path)) == 30

        store.broken = False
        await metering.flush()  # retried at once, then read back from the journal
        rows = _rows(tmp_path)
        assert len(rows) == emitted and len({a for a, _, _ in rows}) == emitted  # all, and none twice
        health = metering.health()["writer"]
        assert health["state"] == "ok" and health["queued"] == 0 and health["journal_only"] == 0
        assert health["events_written"] == emitted and health["lag_s"] == 0.0
        assert len(list((tmp_path / JOURNAL_DIR).iterdir())) <= 2
        assert any("written to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
    finally:
        await metering.stop()
    again = Metering(_config(tmp_path))  # a restart replays nothing twice
    await again.start()
    await again.stop()
    assert len(_rows(tmp_path)) == emitted
    assert [p.read_bytes() for p in (tmp_path / JOURNAL_DIR).iterdir()] == [b""]  # only the next number's empty segment


async def test_stopping_while_the_store_fails_leaves_everything_to_the_journal(tmp_path: Path) -> None:
    metering, store = await _metering(tmp_path, max_queue=20)
    store.broken = True
    for i in range(120):
        metering.record(_event(i))
    await metering.stop()  # cannot commit: the journal keeps them
    assert _rows(tmp_path) == []
    again = Metering(_config(tmp_path))
    await again.start()
    try:
        assert len(_rows(tmp_path)) == 120
        await again.ledger.reserve("x", [(("user", "alice"), {"daily_usd": 10.0})], 0.0, 0)
        assert again.ledger.used(("user", "alice"))[0] == pytest.approx(0.12)  # and the quotas see it
    finally:
        await again.stop()


async def test_a_dead_writer_fails_flushes_and_the_journal_keeps_the_rest(tmp_path: Path) -> None:
    metering, store = await _metering(tmp_path, max_queue=10)

    def boom() -> Any:
        raise RuntimeError("writer bug")

    try:
        metering.record(_event(0))
        await metering.flush()
        store._gather = boom  # type: ignore[method-assign]
        metering.record(_event(1))  # wakes the writer; its next look at the queue kills it
        await until(lambda: store._thread is None or not store._thread.is_alive(), "the writer thread to die")
        with pytest.raises(OmenError) as err:
            await metering.flush()
        assert err.value.status == 503 and "stopped" in err.value.message
        assert metering.health()["state"] == "dead" and "writer bug" in metering.health()["writer"]["last_error"]
        for i in range(2, 60):
            metering.record(_event(i))
        assert store._queue.qsize() <= 10 + 2  # bounded: the journal holds the rest
    finally:
        await metering.stop()
    again = Metering(_config(tmp_path))
    await again.start()
    await again.stop()
    assert len(_rows(tmp_path)) == 60


async def test_a_lone_surrogate_in_a_header_costs_no_usage_event(tmp_path: Path) -> None:
    """``User-Agent: probe\\xff`` arrives as ``probe\\udcff``; the journal's encoder refuses it."""
    metering, store = await _metering(tmp_path)
    store.broken = True  # so that the journal is the only copy: what a kill -9 would leave
    metering.record(_event(1, client="probe\udcff", user="mallory", cost_usd=0.25))
    metering.record(AttemptStarted("r2.0", "r2", "mallory", None, "probe\udcff", "s\ud800", "openai", "gpt-4o-mini", "single", 9))
    metering.record(_event(3, user="mallory\udfff", cost_usd=0.5))
    health = metering.health()["journal"] if hasattr(metering, "health") else {}
    await metering.stop()
    assert _rows(tmp_path) == []

    again = Metering(_config(tmp_path))
    await again.start()
    try:
        rows = {a: (c, cost) for a, c, cost in _rows(tmp_path)}
        assert rows["r1.0"] == ("probe\ufffd", 0.25)
        cut = rows["r2.0"][1]  # the stream the "crash" cut: charged its prompt, estimated
        assert rows["r2.0"][0] == "probe\ufffd" and cut > 0
        assert rows["r3.0"][1] == 0.5
        mallory = ("user", "mallory")
        await again.ledger.reserve("x", [(mallory, {"daily_usd": 10.0})], 0.0, 0)
        assert again.ledger.used(mallory)[0] == pytest.approx(0.25 + cut)
        odd = ("user", "mallory\ufffd")
        await again.ledger.reserve("y", [(odd, {"daily_usd": 10.0})], 0.0, 0)
        assert again.ledger.used(odd)[0] == pytest.approx(0.5)
        assert health["cleaned"] == 3 and health["state"] == "ok"  # journaled cleaned, not failed
    finally:
        await again.stop()


async def test_a_record_sqlite_refuses_is_cleaned_without_blocking_the_batch(tmp_path: Path) -> None:
    metering, _ = await _metering(tmp_path)
    try:
        metering.record(_event(0))
        metering.record(_event(1, cost_usd=float("nan")))  # NOT NULL in SQLite (NaN binds as NULL)
        metering.record(_event(2, usage=Usage(2**64, 1)))  # past 64 bits: the journal's encoder refuses it too
        metering.record(_event(3))
        await metering.flush()
        rows = {a: cost for a, _, cost in _rows(tmp_path)}
        assert set(rows) == {"r0.0", "r1.0", "r2.0", "r3.0"} and rows["r1.0"] == 0.0
        with sqlite3.connect(tmp_path / USAGE_DB) as db:
            assert db.execute("SELECT prompt_tokens FROM usage_event WHERE attempt_id = 'r2.0'").fetchone() == (2**63 - 1,)
        assert metering.health()["writer"]["cleaned"] >= 1 and metering.health()["writer"]["rejected"] == 0
        assert not (tmp_path / REJECTED_FILE).exists()
    finally:
        await metering.stop()


class _FullDisk:
    """posix_fallocate (mapped segments) and write (written ones) while the disk is full:
    no block for a new segment; a write cut mid-line."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self._fallocate = getattr(segment_mod.os, "posix_fallocate", None)
        self._write = segment_mod.os.write
        monkeypatch.setattr(segment_mod.os, "posix_fallocate", self.fallocate, raising=False)
        monkeypatch.setattr(segment_mod.os, "write", self.write)

    def fallocate(self, fd: int, offset: int, size: int) -> None:
        if self.full or self._fallocate is None:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._fallocate(fd, offset, size)

    def write(self, fd: int, data: bytes) -> int:
        return self._write(fd, data[: len(data) // 2] if self.full else data)


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "written"])
async def test_a_full_disk_is_loud_and_the_records_are_still_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mapped: bool
) -> None:
    disk = _FullDisk(monkeypatch)
    # Mapped: every record needs a segment of its own, so the full disk shows at once.
    metering, _ = await _metering(tmp_path, segment_bytes=64 if mapped else None, mapped=mapped)
    try:
        metering.record(_event(0))
        disk.full = True
        metering.record(_event(1))
        metering.record(_event(2))
        logged = [r for r in caplog.records if "cannot write the usage journal" in r.getMessage()]
        assert len(logged) == 1  # loud, once per episode
        assert ("No space left" if mapped else "short write") in logged[0].getMessage()
        disk.full = False
        metering.record(_event(3))
        await metering.flush()
        assert [row[0] for row in _rows(tmp_path)] == ["r0.0", "r1.0", "r2.0", "r3.0"]  # memory kept the rest
        # No torn line and no empty segment left; r0's segment may be released (committed).
        lines = [line for path in (tmp_path / JOURNAL_DIR).iterdir() for line in path.read_bytes().splitlines(keepends=True)]
        assert all(line.endswith(b"\n") and b"\0" not in line for line in lines) and b'"r3.0"' in lines[-1]
        assert [(seq, r.attempt_id) for seq, _, r in metering.journal.replay(1)] == [(2, "r3.0")]
        health = metering.health()["journal"]
        assert health["state"] == "ok" and health["failures"] == 2 and health["unjournaled"] == 2
    finally:
        await metering.stop()


async def test_a_full_disk_at_start_still_serves_and_journals_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = _FullDisk(monkeypatch)
    disk.full = True
    metering, _ = await _metering(tmp_path, mapped=True)  # starts: the first segment waits
    try:
        assert any("cannot open the usage journal" in r.getMessage() for r in caplog.records)
        assert metering.health()["journal"]["state"] == "failing"  # at once, not at the first record
        metering.record(_event(0))
        assert metering.health()["journal"]["unjournaled"] == 1
        disk.full = False
        metering.record(_event(1))
        await metering.flush()
        assert [row[0] for row in _rows(tmp_path)] == ["r0.0", "r1.0"]
        assert metering.health()["journal"]["state"] == "ok"
        assert [r.attempt_id for _, _, r in metering.journal.replay(0)] == ["r1.0"]
    finally:
        await metering.stop()


async def test_when_nothing_can_record_new_requests_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metering, store = await _metering(tmp_path, max_queue=5)

    def full(kind: str, record: Any) -> int:
        raise OSError(28, "No space left on device")

    try:
        store.broken = True
        monkeypatch.setattr(metering.journal, "append", full)
        for i in range(12):  # past the bound: memory keeps them, it is their only copy
            metering.record(_event(i))
        with pytest.raises(OmenError) as err:
            await metering.policy.admit(Caller("req_x", "bob"), CostBound(10, 10, 0.0))
        assert err.value.status == 503 and err.value.code == "usage_unrecordable"
        assert metering.recording_blocked() is not None
        monkeypatch.undo()
        store.broken = False
        await metering.flush()
        assert len(_rows(tmp_path)) == 12
        assert metering.recording_blocked() is None
    finally:
        await metering.stop()


# ---------------------------------------------------------------- through the server


@pytest.fixture
async def flaky(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Stack, list[bool]]]:
    assert stack.service.metering is not None
    store = stack.service.metering.store
    broken = [False]
    real = store._apply  # type: ignore[attr-defined]

    def apply(*args: Any, **kwargs: Any) -> None:
        if broken[0]:
            raise sqlite3.OperationalError(FULL)
        real(*args, **kwargs)

    monkeypatch.setattr(store, "_apply", apply)
    yield stack, broken


async def test_usage_api_says_503_while_the_store_fails_and_status_shows_why(flaky: tuple[Stack, list[bool]]) -> None:
    stack, broken = flaky
    await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    assert (await mu.get_json(stack, "/v1/usage"))[1]["total"]["requests"] == 1
    broken[0] = True
    reply = await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    assert reply.choices[0].message.content  # serving goes on
    status, body = await mu.get_json(stack, "/v1/usage")
    assert status == 503 and set(body) == {"error"}
    assert body["error"]["code"] == "usage_store_unavailable" and FULL in body["error"]["message"]
    assert (await mu.get_json(stack, "/v1/usage/events"))[0] == 503
    code, st = await mu.get_json(stack, "/v1/omen/status")
    assert code == 200 and st["metering"]["state"] == "failing"
    assert FULL in st["metering"]["writer"]["last_error"]
    broken[0] = False
    status, body = await mu.get_json(stack, "/v1/usage")
    assert status == 200 and body["total"]["requests"] == 2
    assert (await mu.get_json(stack, "/v1/omen/status"))[1]["metering"]["state"] == "ok"
