"""Where OMEN relies on something a dependency does not document, pinned and checked here.

docs/architecture.md ("Dependencies' APIs") lists each one and why no public API does the
job. pyproject.toml pins those dependencies to the tested minor version; when an upgrade
moves one of these names, the test below says which and where OMEN uses it, instead of a
distant test failing for an unclear reason (or, worse, nothing failing).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

ROOT = Path(__file__).resolve().parent.parent
OURS = {"omen_local", "glyph", "rune", "app"}


def _params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_aiohttp_runner_hooks_are_where_server_runner_expects_them() -> None:
    where = "omen_local/server/runner.py answers parser errors in the OpenAI shape through it"
    assert inspect.iscoroutinefunction(getattr(web.AppRunner, "_make_server", None)), (
        f"aiohttp {version('aiohttp')}: AppRunner._make_server is gone or no longer a coroutine; {where}"
    )
    assert _params(RequestHandler.handle_error) == ["self", "request", "status", "exc", "message"], (
        f"aiohttp {version('aiohttp')}: RequestHandler.handle_error's signature changed; {where}"
    )
    assert "__slots__" in vars(RequestHandler), (
        f"aiohttp {version('aiohttp')}: RequestHandler lost its __slots__; {where} (swaps the class)"
    )
    assert "__slots__" not in vars(web.Server), (
        f"aiohttp {version('aiohttp')}: web.Server gained __slots__; {where} (swaps its class)"
    )


async def test_a_parser_error_comes_back_in_the_openai_shape_through_the_runner() -> None:
    """The hooks above, end to end on a real socket: a request line aiohttp's parser refuses."""
    from omen_local.server.runner import Runner

    async def never(request: web.Request) -> web.Response:
        raise AssertionError("a malformed request reached the application")

    app = web.Application()
    app.router.add_get("/", never)
    runner = Runner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await runner.cleanup()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"400", head
    assert b"application/json" in head, (
        f"aiohttp {version('aiohttp')}: the parser's error answer no longer goes through "
        "RequestHandler.handle_error (omen_local/server/runner.py)"
    )
    assert json.loads(body)["error"]["code"] == "bad_http_request"


def test_aiohttp_connector_connect_takes_what_the_pool_detection_overrides() -> None:
    """BaseConnector.connect is documented as ``connect(request)``; aiohttp calls it with
    (req, traces, timeout), which omen_local/providers/_http.py's _Connector overrides.
    (tests/test_transport.py checks the behaviour: pooled connections are reported.)"""
    import aiohttp

    assert _params(aiohttp.BaseConnector.connect) == ["self", "req", "traces", "timeout"], (
        f"aiohttp {version('aiohttp')}: BaseConnector.connect's parameters changed; "
        "omen_local/providers/_http.py _Connector.connect overrides it"
    )


def test_peewee_metadata_add_field_is_there() -> None:
    """Model._meta is peewee's documented metadata; its add_field is not in the API docs.
    omen_local/metering/store.py adds the rollup's metric columns with it."""
    from peewee import Metadata

    assert _params(Metadata.add_field)[:3] == ["self", "field_name", "field"], (
        f"peewee {version('peewee')}: Metadata.add_field changed; omen_local/metering/store.py uses it"
    )


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in OURS or parts[0] in sys.stdlib_module_names:
                continue
            if any(p.startswith("_") and not p.startswith("__") for p in parts):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize("package", sorted(OURS))
def test_no_private_module_of_a_dependency_is_imported(package: str) -> None:
    """A private module (``mcp.shared._httpx_utils``) can move in any release. Each allowed
    one is listed in docs/architecture.md with its pin and its test."""
    allowed: set[str] = set()
    found = [hit for p in sorted((ROOT / package).rglob("*.py")) for hit in _private_imports(p)]
    assert [hit for hit in found if hit.rsplit(": ", 1)[1] not in allowed] == []
