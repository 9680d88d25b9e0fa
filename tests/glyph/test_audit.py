"""The audit chain: edits, deletions and truncation are detected; `glyph audit` shows and verifies."""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from glyph.audit import GENESIS, AuditEntry, AuditLog, entry_hash
from glyph.cli import main
from glyph.db import Store
from glyph.redact import REDACTED, redact


def fill(path: Path, n: int = 5) -> AuditLog:
    store = Store(path)
    log = AuditLog(store)
    for i in range(n):
        log.append(AuditEntry(client="ed", server="fake", tool=f"t{i}", arguments={"i": i}, decision="allow",
                              decided_by="policy:rule 1", outcome="ok", duration_us=10 + i, result_bytes=100))
    return log


def sql(path: Path, statement: str) -> None:
    """Tamper as an attacker with write access would: drop the append-only triggers first."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        conn.execute(statement)


def test_the_table_refuses_updates_and_deletes(tmp_path: Path) -> None:
    fill(tmp_path / "g.db").store.close()
    with sqlite3.connect(tmp_path / "g.db") as conn:
        for statement in ("UPDATE audit SET outcome = 'ok'", "DELETE FROM audit WHERE id = 5"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)


def test_chain_links_every_row(tmp_path: Path) -> None:
    log = fill(tmp_path / "g.db")
    rows = log.rows()
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    assert all(entry_hash(r) == r["hash"] for r in rows)
    report = log.verify()
    assert report.ok and report.count == 5 and report.head_hash == rows[-1]["hash"]
    log.store.close()


@pytest.mark.parametrize(("statement", "bad_id", "problem"), [
    ("UPDATE audit SET decision = 'deny' WHERE id = 3", 3, "edited"),
    ("UPDATE audit SET arguments = '{\"i\":99}' WHERE id = 1", 1, "edited"),
    ("UPDATE audit SET ts = '2000-01-01T00:00:00+00:00' WHERE id = 5", 5, "edited"),
    ("DELETE FROM audit WHERE id = 3", 4, "missing"),
    ("DELETE FROM audit WHERE id = 1", 2, "missing"),
    ("UPDATE audit SET prev_hash = hash WHERE id = 2", 2, "prev_hash"),
])
def test_tampering_is_found_at_the_first_bad_row(tmp_path: Path, statement: str, bad_id: int, problem: str) -> None:
    db = tmp_path / "g.db"
    fill(db).store.close()
    sql(db, statement)
    with Store(db) as store:
        report = AuditLog(store).verify()
    assert not report.ok
    assert report.bad_id == bad_id
    assert problem in report.problem


def test_rewriting_a_row_with_a_fresh_hash_breaks_the_next_link(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    log = fill(db)
    row = log.rows()[1]
    row["decision"] = "deny"
    forged = entry_hash(row)
    log.store.close()
    sql(db, f"UPDATE audit SET decision = 'deny', hash = '{forged}' WHERE id = 2")
    with Store(db) as store:
        report = AuditLog(store).verify()
    assert not report.ok and report.bad_id == 3


def test_truncation_is_found_against_a_recorded_head(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    log = fill(db)
    head = log.verify()
    log.store.close()
    sql(db, "DELETE FROM audit WHERE id = 5")
    with Store(db) as store:
        log = AuditLog(store)
        assert log.verify().ok  # a shorter chain is still a chain...
        report = log.verify(expect_head=(head.head_id, head.head_hash))
        assert not report.ok and "truncated" in report.problem  # ...but not the one recorded


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    """Two Glyph processes (two connections) appending at once still make one valid chain."""
    db = tmp_path / "g.db"
    stores = [Store(db), Store(db)]

    def write(store: Store, who: str) -> None:
        log = AuditLog(store)
        for i in range(40):
            log.append(AuditEntry(client=who, tool=f"t{i}"))

    threads = [threading.Thread(target=write, args=(s, f"c{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = AuditLog(stores[0]).verify()
    assert report.ok and report.count == 80
    for s in stores:
        s.close()


def test_redaction_by_name_and_by_value() -> None:
    args = {
        "path": "a.txt", "password": "p", "api_key": "k", "max_tokens": 50, "author": "ann",
        "headers": {"Authorization": "Bearer abcdefghijkl"},
        "note": "key sk-ant-REDACTME0123456789abcdef and ghp_0123456789abcdefghijABCDEFGHIJ",
        "url": "https://bob:hunter2@example.com/x",
        "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
    }
    out = redact(args)
    assert out["path"] == "a.txt" and out["max_tokens"] == 50 and out["author"] == "ann"
    assert out["password"] == out["api_key"] == out["headers"]["Authorization"] == REDACTED
    assert out["note"] == f"key {REDACTED} and {REDACTED}"
    assert out["url"] == f"https://bob:{REDACTED}@example.com/x"
    assert out["pem"] == REDACTED


def write_cfg(tmp_path: Path) -> Path:
    cfg = tmp_path / "glyph.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[rune]\nenabled = false\n')
    return cfg


def test_cli_shows_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_cfg(tmp_path)
    fill(tmp_path / "data" / "glyph.db", 3).store.close()
    assert main(["audit", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "fake__t2" in table and "policy:rule 1" in table
    assert main(["audit", "--config", str(cfg), "--json", "--limit", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == 3
    assert main(["audit", "--config", str(cfg), "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 3 entries")
    head = out.split("head ")[1].strip()
    sql(tmp_path / "data" / "glyph.db", "UPDATE audit SET outcome = 'error' WHERE id = 2")
    assert main(["audit", "--config", str(cfg), "--verify"]) == 1
    assert "TAMPERED at row 2" in capsys.readouterr().out
    sql(tmp_path / "data" / "glyph.db", "DELETE FROM audit WHERE id >= 2")
    assert main(["audit", "--config", str(cfg), "--verify"]) == 0
    capsys.readouterr()
    assert main(["audit", "--config", str(cfg), "--verify", "--head", head]) == 1
    assert "truncated" in capsys.readouterr().out


def test_cli_decisions_list_and_forget(tmp_path: Path) -> None:
    from glyph.consent import Decision, Scope
    from glyph.decisions import DecisionMemory

    cfg = write_cfg(tmp_path)
    with Store(tmp_path / "data" / "glyph.db") as store:
        store.Decision.insert(server="fake", tool="status", scope=Scope.ALWAYS.value, ts="now").execute()
        assert DecisionMemory(store).persisted()[0]["scope"] == "always"
        assert Decision(Scope.ALWAYS, "x").allows
    out = io.StringIO()
    from glyph.cli import _decisions

    with Store(tmp_path / "data" / "glyph.db") as store:
        assert _decisions(store, ["fake__status"], out) == 0
        assert "forgot 1 decision(s) for fake__status" in out.getvalue()
        assert DecisionMemory(store).persisted() == []
    assert main(["decisions", "--config", str(cfg)]) == 0
