"""A small downstream MCP server for Glyph's tests, in-process or over stdio.

Built on the SDK's low-level ``Server`` so a test controls every tool definition exactly
(and can change one, to test pinning) and can see which calls actually arrived (to prove
denied calls never reach the downstream). Run as a script it serves stdio and appends each
call it receives to the file named by ``FAKE_CALL_LOG``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

PATH_ARG = {"type": "string", "description": "file path"}


def default_tools() -> dict[str, types.Tool]:
    ro = types.ToolAnnotations(read_only_hint=True)
    rw = types.ToolAnnotations(read_only_hint=False, destructive_hint=True)
    tools = [
        types.Tool(name="read_file", description="Read a file.", annotations=ro,
                   input_schema={"type": "object", "properties": {"path": PATH_ARG}, "required": ["path"],
                                 "additionalProperties": False},
                   output_schema={"type": "object", "properties": {"path": {"type": "string"},
                                                                   "text": {"type": "string"}},
                                  "required": ["path", "text"]}),
        types.Tool(name="write_file", description="Write a file.", annotations=rw,
                   input_schema={"type": "object", "properties": {"path": PATH_ARG, "content": {"type": "string"}},
                                 "required": ["path", "content"], "additionalProperties": False}),
        types.Tool(name="edit_file", description="Replace text in a file.", annotations=rw,
                   input_schema={"type": "object", "properties": {
                       "path": PATH_ARG, "old_string": {"type": "string"}, "new_string": {"type": "string"}},
                       "required": ["path", "old_string", "new_string"]}),
        types.Tool(name="status", description="Repository status (no arguments).", annotations=ro,
                   input_schema={"type": "object", "properties": {}}),
        types.Tool(name="login", description="Takes a secret.",
                   input_schema={"type": "object", "properties": {"user": {"type": "string"},
                                                                  "token": {"type": "string"}}}),
        types.Tool(name="bad_output", description="Declares an output schema and breaks it.", annotations=ro,
                   input_schema={"type": "object", "properties": {}},
                   output_schema={"type": "object", "properties": {"count": {"type": "integer"}},
                                  "required": ["count"]}),
        types.Tool(name="fail", description="Always reports a tool error.", annotations=ro,
                   input_schema={"type": "object", "properties": {}}),
        types.Tool(name="crash", description="Kills the server process (stdio runs only).", annotations=ro,
                   input_schema={"type": "object", "properties": {}}),
    ]
    return {t.name: t for t in tools}


class FakeServer:
    def __init__(self, call_log: str | None = None) -> None:
        self.tools = default_tools()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.call_log = call_log
        self.server: Server[Any] = Server("fake", version="1.0", on_list_tools=self._list, on_call_tool=self._call)

    async def _list(self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
                    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(self.tools.values()))

    async def _call(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
                    ) -> types.CallToolResult:
        args = dict(params.arguments or {})
        self.calls.append((params.name, args))
        if self.call_log:
            await anyio.Path(self.call_log).write_text(
                await self._logged() + json.dumps([params.name, args]) + "\n", encoding="utf-8")
        if params.name == "read_file":
            data = {"path": args["path"], "text": f"contents of {args['path']}"}
            return types.CallToolResult(content=[types.TextContent(type="text", text=data["text"])],
                                        structured_content=data)
        if params.name == "bad_output":
            return types.CallToolResult(content=[types.TextContent(type="text", text="oops")],
                                        structured_content={"count": "many"})
        if params.name == "crash" and os.environ.get("FAKE_ALLOW_CRASH"):
            os._exit(3)
        if params.name == "fail":
            return types.CallToolResult(content=[types.TextContent(type="text", text="it failed")], is_error=True)
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"{params.name} ok")])


    async def _logged(self) -> str:
        assert self.call_log is not None
        path = anyio.Path(self.call_log)
        return await path.read_text(encoding="utf-8") if await path.exists() else ""


async def _main() -> None:
    fake = FakeServer(os.environ.get("FAKE_CALL_LOG"))
    async with stdio_server() as (read_stream, write_stream):
        await fake.server.run(read_stream, write_stream, fake.server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(_main)
    sys.exit(0)
