"""ToolSpec: one tool's name, schemas, annotations and handler, the unit Glyph and MCP see."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rune.git import Git
    from rune.grep import Searcher
    from rune.sandbox import Sandbox

JSON = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What a handler may use: the sandbox and the grep and git engines bound to it."""

    sandbox: Sandbox
    searcher: Searcher
    git: Git


Handler = Callable[[Context, JSON], Awaitable[JSON]]


@dataclass(frozen=True)
class ToolAnnotations:
    """MCP's behaviour hints. Every Rune tool is local, so open_world is always False."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool = False

    def to_mcp(self) -> JSON:
        return {
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        }


READ_ONLY = ToolAnnotations(read_only=True, destructive=False, idempotent=True)


@dataclass(frozen=True)
class ToolSpec:
    """A tool as listed to callers. Treat the schema dicts as read-only; to_mcp() copies them."""

    name: str
    title: str
    description: str
    input_schema: JSON
    output_schema: JSON
    annotations: ToolAnnotations
    handler: Handler = field(repr=False, compare=False)

    def to_mcp(self) -> JSON:
        """The tool as an MCP `tools/list` entry (camelCase keys)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": copy.deepcopy(self.input_schema),
            "outputSchema": copy.deepcopy(self.output_schema),
            "annotations": {"title": self.title, **self.annotations.to_mcp()},
        }


def threaded(fn: Callable[[Context, JSON], JSON]) -> Handler:
    """Run blocking filesystem work in a worker thread so the event loop stays free."""

    async def handler(ctx: Context, args: JSON) -> JSON:
        return await asyncio.to_thread(fn, ctx, args)

    handler.__name__ = fn.__name__
    return handler
