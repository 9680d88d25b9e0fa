"""Glyph as an MCP server: the namespaced tools, and every call through the gateway.

Built on the SDK's low-level ``Server`` (a proxy needs the raw ``tools/list`` and
``tools/call`` handlers, not decorated functions). Served over stdio for editors that
spawn it, or Streamable HTTP on loopback for the tray app and clients that connect.
Glyph never asks a client for its roots: they are Glyph's decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.stdio import stdio_server
from pydantic import ValidationError
from starlette.types import ASGIApp

from glyph import __version__
from glyph.display import one_line
from glyph.gateway import Gateway

log = logging.getLogger("glyph.server")

INSTRUCTIONS = (
    "Glyph fronts local tools (files, search, git) and other MCP servers. Tool names are "
    "server__tool. Calls may need the user's consent; a refused call returns an error that says why."
)


MAX_CLIENT_NAME = 200


def client_name(ctx: ServerRequestContext[Any, Any]) -> str:
    """The client's self-declared name, made one visible line: it reaches prompts, the audit and logs."""
    params = ctx.session.client_params
    if params is None:
        return "unknown"
    info = params.client_info
    name = f"{info.name}/{info.version}" if info.version else info.name
    return one_line(name[:MAX_CLIENT_NAME])


class MalformedCalls:
    """Audits the ``tools/call`` requests the SDK would refuse before Glyph's handler runs.

    A call whose params do not validate (no name, arguments that are not an object) would
    otherwise be answered with a protocol error and leave no audit row. This middleware runs
    before the SDK's validation and answers such a call through the gateway: one row
    (``invalid_input``) and an ``isError`` result that says what is wrong.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        raw = ctx.params
        try:
            types.CallToolRequestParams.model_validate({} if raw is None else raw, by_name=False)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                                 for e in exc.errors()[:3])
            params = raw if isinstance(raw, Mapping) else {}
            return await self.gateway.refuse_malformed(params.get("name"), params.get("arguments", raw),
                                                       client_name(ctx), problems)
        return await call_next(ctx)


def build_server(gateway: Gateway) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await gateway.list_tools())

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        return await gateway.call(params.name, params.arguments, client_name(ctx))

    server: Server[Any] = Server(
        "glyph", version=__version__, title="Glyph (OMEN Local tool governance)", instructions=INSTRUCTIONS,
        on_list_tools=list_tools, on_call_tool=call_tool,
    )
    server.middleware.append(MalformedCalls(gateway))
    return server


async def serve_stdio(gateway: Gateway) -> None:
    server = build_server(gateway)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(gateway: Gateway, host: str = "127.0.0.1", port: int = 8767, token: str | None = None) -> None:
    """Streamable HTTP at ``http://host:port/mcp`` (DNS-rebinding protection on loopback).

    With ``token`` every request must carry ``Authorization: Bearer <token>`` (checked by the
    SDK's bearer-auth middleware); without one (``--no-auth``) only a loopback host is allowed.
    """
    import uvicorn

    from glyph.http_auth import LOOPBACK, StaticTokenVerifier, auth_settings

    server = build_server(gateway)
    if token:
        app: ASGIApp = server.streamable_http_app(host=host, auth=auth_settings(host, port),
                                                  token_verifier=StaticTokenVerifier(token))
    elif host in LOOPBACK:
        app = server.streamable_http_app(host=host)
    else:
        raise ValueError(f"refusing to serve {host} without a token: anyone who can reach it could call tools")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    log.info("glyph listening on http://%s:%d/mcp%s", host, port, "" if token else " WITHOUT AUTHENTICATION")
    await uvicorn.Server(config).serve()
