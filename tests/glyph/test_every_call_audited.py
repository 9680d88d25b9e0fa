"""Every call gets exactly one audit row; every malformed one an ``isError`` result (issue 9, item 5).

Before, a path with a NUL byte made ``os.path.realpath`` raise inside Glyph: the client got a
protocol error and nothing was audited. The same held for ``~nosuchuser``, undecodable text,
and every ``tools/call`` whose params the SDK refused (arguments that are not an object, no
name); a huge path tied Glyph up in ``realpath`` (its cost grows with the square of the length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from tests.glyph.conftest import make_config, rig


class RawCall(types.Request[Any, str]):
    """A tools/call as a careless or hostile client sends it, past the SDK's typed helpers."""


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": value}
    return value


# (label, tool name, arguments, text the error must contain)
CALLS: list[tuple[str, str, Any, str]] = [
    ("NUL byte in a path", "fake__read_file", {"path": "a.txt\x00/../../etc/passwd"}, "NUL byte"),
    ("NUL byte, write", "fake__write_file", {"path": "ok.txt\x00", "content": "x"}, "NUL byte"),
    ("NUL byte in a file URL", "fake__read_file", {"path": "file:///tmp/a%00b"}, "NUL byte"),
    ("path is a number", "fake__read_file", {"path": 3}, "is not of type 'string'"),
    ("path is a list", "fake__read_file", {"path": ["a", "b"]}, "is not of type 'string'"),
    ("path is an object", "fake__read_file", {"path": {"p": "a"}}, "is not of type 'string'"),
    ("missing argument", "fake__read_file", {}, "'path' is a required property"),
    ("unexpected argument", "fake__read_file", {"path": "a", "extra": 1}, "Additional properties"),
    ("unknown tool", "fake__nope", {}, "Unknown tool"),
    ("unknown server", "nope__read_file", {}, "Unknown tool"),
    ("empty name", "", {}, "Unknown tool"),
    ("huge tool name", "fake__" + "x" * 200_000, {}, "characters)"),
    ("huge path", "fake__read_file", {"path": "a/" * 500_000}, "longer than 4096 bytes"),
    ("huge component", "fake__read_file", {"path": "x" * 100_000}, "longer than 4096 bytes"),
    ("unknown home", "fake__read_file", {"path": "~no-such-user-glyph-test/x"}, "cannot be resolved"),
    ("undecodable path", "fake__read_file", {"path": "a\ud800.txt"}, "cannot be resolved"),
    ("deep nesting", "fake__status", {"d": nested(100)}, "nested deeper than 64"),
]

# (label, raw params of tools/call, text the error must contain)
RAW: list[tuple[str, Any, str]] = [
    ("arguments a list", {"name": "fake__status", "arguments": [1, 2]}, "arguments: Input should be a valid dictionary"),
    ("arguments a string", {"name": "fake__read_file", "arguments": "a.txt"}, "valid dictionary"),
    ("name a number", {"name": 3, "arguments": {}}, "name: Input should be a valid string"),
    ("name null", {"name": None}, "name: Input should be a valid string"),
    ("no name", {"arguments": {"path": "a"}}, "name: Field required"),
    ("no params", None, "name: Field required"),
]


async def _one_row(r: Any, send: Any) -> tuple[types.CallToolResult, dict[str, Any]]:
    before = len(r.gateway.audit.rows(None))
    result = await send()
    rows = r.gateway.audit.rows(None)[before:]
    assert len(rows) == 1, rows
    return result, rows[0]


@pytest.mark.parametrize(("label", "name", "arguments", "expected"), CALLS, ids=[c[0] for c in CALLS])
async def test_malformed_call_gets_one_row_and_is_error(tmp_path: Path, label: str, name: str, arguments: Any,
                                                        expected: str) -> None:
    async with rig(make_config(tmp_path, rules=[{"action": "allow"}])) as r:
        result, row = await _one_row(r, lambda: r.client.call_tool(name, arguments))
        assert result.is_error, label
        assert expected in r.text(result), r.text(result)[:300]
        assert (row["kind"], row["decision"]) == ("call", "deny")
        assert row["outcome"] in ("invalid_input", "unknown_tool")
        assert r.fake.calls == []  # nothing malformed reaches the downstream
        assert r.gateway.audit.verify().ok


@pytest.mark.parametrize(("label", "params", "expected"), RAW, ids=[c[0] for c in RAW])
async def test_malformed_request_gets_one_row_and_is_error(tmp_path: Path, label: str, params: Any,
                                                           expected: str) -> None:
    request = RawCall(method="tools/call", params=params)
    async with rig(make_config(tmp_path, rules=[{"action": "allow"}])) as r:
        result, row = await _one_row(r, lambda: r.client.session.send_request(request, types.CallToolResult))
        assert result.is_error, label
        assert expected in r.text(result), r.text(result)
        assert (row["kind"], row["decision"], row["outcome"], row["client"]) == (
            "call", "deny", "invalid_input", "test-editor/1")
        assert r.fake.calls == []
        assert r.gateway.audit.verify().ok


async def test_allowed_and_refused_calls_get_one_row_each(tmp_path: Path) -> None:
    config = make_config(tmp_path, rules=[{"tool": "write_file", "action": "deny"}, {"action": "allow"}])
    async with rig(config) as r:
        ok, row = await _one_row(r, lambda: r.call("fake__read_file", {"path": "a.txt"}))
        assert not ok.is_error and (row["decision"], row["outcome"]) == ("allow", "ok")
        denied, row = await _one_row(r, lambda: r.call("fake__write_file", {"path": "a.txt", "content": "x"}))
        assert denied.is_error and (row["decision"], row["outcome"]) == ("deny", "denied")


async def test_a_failure_inside_glyph_is_audited_as_an_internal_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(make_config(tmp_path, rules=[{"action": "allow"}])) as r:
        def broken(facts: object) -> None:
            raise KeyError("policy bug")

        monkeypatch.setattr(r.gateway.policy, "evaluate", broken)
        result, row = await _one_row(r, lambda: r.call("fake__read_file", {"path": "a.txt"}))
        assert result.is_error and "internal error: KeyError" in r.text(result)
        assert (row["decision"], row["outcome"], row["decided_by"]) == ("deny", "internal_error", "glyph")
        assert r.fake.calls == []
        monkeypatch.undo()
        after, _ = await _one_row(r, lambda: r.call("fake__read_file", {"path": "a.txt"}))
        assert not after.is_error  # Glyph keeps serving
