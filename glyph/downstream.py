"""Connections to the downstream MCP servers Glyph fronts, through the official SDK client.

Each server gets one long-lived ``mcp.Client`` owned by a supervisor task, so the client is
entered and exited in the same task (anyio requires it) while any request task may use it.
A server that fails to start or drops its connection is reconnected on the next use, at
most every few seconds; the others carry on.

Glyph is the downstream servers' client: when one asks for roots (``roots/list``), it gets
Glyph's configured roots, never the editor's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskGroup
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import ClientRequestContext, Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer, Server
from mcp.shared.tool_name_validation import validate_tool_name
from pydantic import FileUrl

from glyph import __version__
from glyph.config import ServerSpec
from glyph.pins import definition, definition_hash

log = logging.getLogger("glyph.downstream")

SEP = "__"
RECONNECT_EVERY_S = 3.0
MAX_PAGES = 100

Target = Server[Any] | MCPServer | StdioServerParameters | Transport | str


def exposed_name(server: str, tool: str) -> str:
    """``server__tool``: MCP tool names allow ``[A-Za-z0-9_.-]``; many model APIs reject '.'."""
    return f"{server}{SEP}{tool}"


@dataclass(frozen=True)
class ToolEntry:
    """One downstream tool as Glyph exposes it."""

    server: str
    tool: types.Tool
    exposed: str
    definition: dict[str, Any]
    hash: str

    @property
    def read_only(self) -> bool:
        a = self.tool.annotations
        return bool(a is not None and a.read_only_hint)

    @property
    def destructive(self) -> bool:
        a = self.tool.annotations
        # The spec's default for a tool that is not read-only is destructive.
        return not self.read_only and (a is None or a.destructive_hint is not False)


def spec_target(spec: ServerSpec) -> Target:
    if spec.url is not None:
        return http_transport(spec.url, spec.headers)
    assert spec.command is not None
    return StdioServerParameters(command=spec.command, args=list(spec.args), env=spec.env or None, cwd=spec.cwd)


# The MCP SDK's own defaults for its HTTP transports (30 s, and 300 s to read: a server may
# hold an event stream open). Its helper that applies them lives in a private module
# (mcp.shared._httpx_utils); streamable_http_client documents passing a client of our own.
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


@asynccontextmanager
async def http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    async with httpx2.AsyncClient(headers=headers or None, timeout=HTTP_TIMEOUT) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


class Downstream:
    def __init__(self, name: str, target: Target | None, roots: tuple[Path, ...], connect_timeout_s: float,
                 spec: ServerSpec | None = None) -> None:
        self.name = name
        self.spec = spec or ServerSpec(name=name, command="(in-process)")
        self._target = target
        self.roots = roots
        self.connect_timeout_s = connect_timeout_s
        self.client: Client | None = None
        self.error: str | None = None
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self._connecting: anyio.Event | None = None
        self._last_attempt = 0.0
        self._generation = 0  # so a finished supervisor never clears its successor's state

    def _new_target(self) -> Target:
        # A Transport (the HTTP one) is single-use; build a fresh one per connection.
        if self._target is not None:
            return self._target
        return spec_target(self.spec)

    async def start(self, tg: TaskGroup) -> None:
        self._tg = tg
        await self.ensure(force=True)

    async def ensure(self, force: bool = False) -> Client | None:
        """The connected client, connecting (or reconnecting) when due."""
        if self.client is not None:
            return self.client
        if self._connecting is not None:
            with anyio.move_on_after(self.connect_timeout_s):
                await self._connecting.wait()
            return self.client
        if self._tg is None or (not force and time.monotonic() - self._last_attempt < RECONNECT_EVERY_S):
            return None
        self._last_attempt = time.monotonic()
        self._stop = anyio.Event()
        self._generation += 1
        ready = self._connecting = anyio.Event()
        self._tg.start_soon(self._supervise, ready, self._generation, name=f"glyph-downstream-{self.name}")
        with anyio.move_on_after(self.connect_timeout_s):
            await ready.wait()
        if self.client is None and self.error is None:
            self.error = f"no connection after {self.connect_timeout_s:g} s"
        return self.client

    async def _supervise(self, ready: anyio.Event, generation: int) -> None:
        stop = self._stop
        try:
            async with Client(
                self._new_target(),
                cache=None,
                client_info=types.Implementation(name="glyph", version=__version__),
                list_roots_callback=self._list_roots,
            ) as client:
                if generation == self._generation:
                    self.client, self.error, self._connecting = client, None, None
                ready.set()
                await stop.wait()
        except Exception as exc:
            if generation == self._generation:
                self.error = f"{type(exc).__name__}: {exc}"
            log.warning("downstream %s: %s", self.name, f"{type(exc).__name__}: {exc}")
        finally:
            if generation == self._generation:
                self.client = None
                self._connecting = None
            ready.set()

    async def _list_roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=FileUrl(r.as_uri()), name=r.name) for r in self.roots])

    def disconnect(self) -> None:
        """Let the supervisor close the client; the next use reconnects."""
        self._stop.set()
        self.client = None

    async def list_tools(self) -> list[ToolEntry]:
        client = await self.ensure()
        if client is None:
            return []
        tools: list[ToolEntry] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    entry = self._entry(tool)
                    if entry is not None:
                        tools.append(entry)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except (MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            self._failed(exc)
            return []
        return tools

    def _entry(self, tool: types.Tool) -> ToolEntry | None:
        exposed = exposed_name(self.name, tool.name)
        check = validate_tool_name(exposed)
        if not check.is_valid:
            log.warning("downstream %s: skipping tool %r: %s", self.name, tool.name, "; ".join(check.warnings))
            return None
        defn = definition(tool)
        return ToolEntry(self.name, tool, exposed, defn, definition_hash(defn))

    async def call(self, tool: str, arguments: dict[str, Any], timeout_s: float,
                   meta: dict[str, Any] | None = None) -> types.CallToolResult:
        """Call the tool; raises MCPError when the server cannot be reached or answers an error.

        ``meta`` goes in the request's ``_meta`` (Glyph's exclusions for Rune).
        """
        client = await self.ensure()
        if client is None:
            raise MCPError(code=types.CONNECTION_CLOSED, message=f"server {self.name} is not connected: {self.error}")
        params = types.CallToolRequestParams.model_validate(
            {"name": tool, "arguments": arguments, **({"_meta": meta} if meta else {})})
        request = types.CallToolRequest(params=params)
        try:
            # The session's raw request: Glyph validates the result against the pinned schema itself.
            return await client.session.send_request(request, types.CallToolResult,
                                                     request_read_timeout_seconds=timeout_s)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._failed(exc)
            raise MCPError(code=types.CONNECTION_CLOSED, message=f"server {self.name} disconnected") from exc
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("downstream %s failed: %s", self.name, self.error)
        self.disconnect()
