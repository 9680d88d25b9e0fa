"""Rune as an MCP server (official SDK v2, low-level Server): stdio or Streamable HTTP.

The low-level server is used because Rune already owns its schemas: tools/list is the
registry as-is, and tools/call returns the structured result plus its JSON as text.
A RuneError becomes an `isError` result the model can read; an unknown tool is a
protocol error, as the spec asks.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from rune import __version__
from rune.api import Rune
from rune.errors import RuneError

if TYPE_CHECKING:  # the SDK is heavy to import: load it when serving
    import mcp_types as types
    from mcp.server import Server, ServerRequestContext
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("rune")


def _tool(spec_mcp: Mapping[str, Any]) -> types.Tool:
    import mcp_types as types

    hints = spec_mcp["annotations"]
    return types.Tool(
        name=spec_mcp["name"],
        title=spec_mcp["title"],
        description=spec_mcp["description"],
        input_schema=spec_mcp["inputSchema"],
        output_schema=spec_mcp["outputSchema"],
        annotations=types.ToolAnnotations(
            title=hints["title"],
            read_only_hint=hints["readOnlyHint"],
            destructive_hint=hints["destructiveHint"],
            idempotent_hint=hints["idempotentHint"],
            open_world_hint=hints["openWorldHint"],
        ),
    )


META_EXCLUDE = "rune/exclude"
META_EXCLUDE_CONTENT = "rune/exclude_content"


def _patterns(meta: Mapping[str, Any], key: str) -> list[str]:
    """A call's exclusions from its ``_meta`` (how Glyph hands its deny rules to Rune)."""
    value = meta.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise RuneError("invalid_arguments", f"_meta[{key!r}] must be a list of glob patterns")
    return value


def build_server(rune: Rune, *, name: str = "rune") -> Server[Any]:
    """An MCP server exposing every Rune tool. It does not own `rune`; close it yourself."""
    import mcp_types as types
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError
    tools = [_tool(spec.to_mcp()) for spec in rune.tools]
    schemas = {spec.name: spec.input_schema for spec in rune.tools}

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in schemas:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        meta: Mapping[str, Any] = params.meta or {}
        try:
            result = await rune.call(params.name, params.arguments or {}, exclude=_patterns(meta, META_EXCLUDE),
                                     exclude_content=_patterns(meta, META_EXCLUDE_CONTENT))
        except RuneError as exc:
            return types.CallToolResult(content=[types.TextContent(text=str(exc))], is_error=True)
        except Exception as exc:  # a bug: keep serving, tell the caller
            log.exception("tool %s failed", params.name)
            return types.CallToolResult(content=[types.TextContent(text=f"internal_error: {exc}")], is_error=True)
        text = orjson.dumps(result).decode()
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=result)

    roots = ", ".join(rune.roots)
    return Server(
        name,
        version=__version__,
        instructions=(
            f"File, search and git tools confined to these roots: {roots}. Relative paths resolve "
            "against the first root; paths in results can be passed back as they are."
        ),
        get_tool_input_schema=schemas.get,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


class BearerAuth:
    """Require `Authorization: Bearer <token>` on every HTTP request (optional hardening)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"unauthorized\n"})
                return
        await self.app(scope, receive, send)


async def serve_stdio(rune: Rune) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(rune)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(rune: Rune, *, host: str = "127.0.0.1", port: int = 8766, path: str = "/mcp",
                     token: str | None = None) -> None:
    """Streamable HTTP on host:port/path. Loopback hosts get the SDK's DNS-rebinding checks."""
    import uvicorn

    app: ASGIApp = build_server(rune).streamable_http_app(streamable_http_path=path, host=host)
    if token:
        app = BearerAuth(app, token)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without a token: anyone who can reach it can use the tools", host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    print(f"rune: serving http://{host}:{port}{path}", file=sys.stderr, flush=True)
    await uvicorn.Server(config).serve()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rune", description="Rune: file, grep and git tools over MCP, confined to roots.")
    parser.add_argument("--root", action="append", required=True, metavar="DIR",
                        help="a directory the tools may use (repeatable; the first is the base for relative paths)")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on PORT instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--path", default="/mcp", help="HTTP endpoint path (default /mcp)")
    parser.add_argument("--no-ripgrep", action="store_true", help="use the pure-Python grep")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="treat matching paths as absent: never read, shown or listed (repeatable)")
    parser.add_argument("--exclude-content", action="append", default=[], metavar="GLOB",
                        help="list matching paths by name but never read or show their content (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="rune: %(levelname)s %(message)s")
    try:
        rune = Rune(args.root, ripgrep=not args.no_ripgrep, exclude=args.exclude, exclude_content=args.exclude_content)
    except RuneError as exc:
        print(f"rune: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            if args.http is not None:
                token = os.environ.get("RUNE_HTTP_TOKEN") or None
                anyio.run(lambda: serve_http(rune, host=args.host, port=args.http, path=args.path, token=token))
            else:
                anyio.run(serve_stdio, rune)
        except* (BrokenPipeError, ConnectionResetError):
            _client_gone()
    except KeyboardInterrupt:
        pass
    finally:
        rune.close()
    return 0


def _client_gone() -> None:
    """The client closed the pipe (Glyph or an editor quit): end quietly, without a traceback.

    stdout is pointed at devnull so the interpreter's final flush does not fail again
    (the Python docs' advice for SIGPIPE)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
