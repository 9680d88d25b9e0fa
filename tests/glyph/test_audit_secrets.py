"""No secret reaches glyph.db in any field, checked on the raw bytes of the files (issue 9, item 4).

Before, only ``arguments`` was redacted: a schema error in ``detail`` quoted the rejected
value (``'sk-ant-api03-…' is not of type 'integer'``) and a refusal repeated the path in
``detail`` and ``decided_by``.
"""

from __future__ import annotations

from pathlib import Path

import mcp_types as types

from glyph.audit import AuditEntry, AuditLog
from glyph.db import Store
from tests.glyph.conftest import make_config, rig
from tests.glyph.fake_server import FakeServer

ANTHROPIC = "sk-ant-api03-Zq8vW1xY2zA3bC4dE5fG6hI7jK8lM9nO0pQ"
GITHUB = "ghp_Zq8vW1xY2zA3bC4dE5fG6hI7jK8lM9nO0pQr"
NAMED = "hunter2-but-longer-Zq8v"  # looks like nothing: a secret only because of its key's name
SHORT = "Zq9"  # a short password: scrubbed where quoted


def db_bytes(data_dir: Path) -> bytes:
    files = sorted(data_dir.glob("glyph.db*"))
    assert any(f.name == "glyph.db" for f in files)
    return b"".join(f.read_bytes() for f in files)


def with_count_tool(fake: FakeServer) -> FakeServer:
    fake.tools["count"] = types.Tool(
        name="count", description="Takes a number and a token.",
        input_schema={"type": "object", "properties": {"n": {"type": "integer"}, "token": {"type": "integer"},
                                                       "password": {"type": "integer"}}})
    return fake


async def test_no_secret_in_any_stored_field(tmp_path: Path) -> None:
    config = make_config(tmp_path, rules=[{"action": "allow"}])
    async with rig(config, fake=with_count_tool(FakeServer())) as r:
        calls = [
            ("fake__count", {"n": ANTHROPIC}),  # schema error quoting a secret-looking value
            ("fake__count", {"token": [NAMED]}),  # schema error quoting a value secret by its name
            ("fake__count", {"password": [SHORT]}),
            ("fake__read_file", {"path": f"/elsewhere/{GITHUB}/x"}),  # outside the roots: detail, decided_by
            (f"fake__{GITHUB}", {"token": NAMED}),  # an unknown tool named like a secret
        ]
        for name, args in calls:
            result = await r.call(name, args)
            assert result.is_error, (name, r.text(result))
        details = " ".join(row["detail"] + row["decided_by"] for row in r.gateway.audit.rows(None))
        assert "is not of type 'integer'" in details and "outside the roots" in details  # the rows say why
        assert r.gateway.audit.verify().ok
        raw = db_bytes(tmp_path / "data")
    for secret in (ANTHROPIC, GITHUB, NAMED):
        assert secret.encode() not in raw, secret
    assert f"'{SHORT}'".encode() not in raw
    assert b"[REDACTED]" in raw


def test_surrogates_and_deep_arguments_are_stored(tmp_path: Path) -> None:
    """What a client's JSON can carry must never make the row unwritable."""
    deep: object = "bottom"
    for _ in range(5000):
        deep = {"d": deep}
    with Store(tmp_path / "glyph.db") as store:
        log = AuditLog(store)
        log.append(AuditEntry(tool="t\udcff", arguments={"path": "a\udcff", "deep": deep}, detail="x\ud800"))
        row = log.rows(1)[0]
        assert row["tool"] == "t\\udcff" and "\\udcff" in row["arguments"] and "NESTED TOO DEEP" in row["arguments"]
        assert log.verify().ok
