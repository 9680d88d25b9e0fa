"""The tool loop: the model asks for tools, Glyph decides and runs them, the model goes on.

```python
async with AsyncOmenClient() as omen, GlyphTools.stdio(config="glyph.toml") as glyph:
    result = await run_tool_loop(omen, glyph, [{"role": "user", "content": "fix the typo in README.md"}])
```

Glyph (over MCP: stdio, spawning ``glyph serve``, or Streamable HTTP) asks consent, audits
and calls Rune; this loop only carries calls and results. A denial or a tool error goes
back to the model as the tool's result, saying what happened, so the model can explain or
try something else. The loop is the same in degraded mode (the client talks to Ollama).
It needs the official ``mcp`` SDK, which is why it is not imported by ``omen_local.client``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx2
import mcp_types as types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from .. import __version__
from .aio import AsyncOmenClient
from .answer import Answer, Event, ToolCall
from .hints import Hints

CLIENT_INFO = types.Implementation(name="omen-client", version=__version__)
MAX_RESULT_CHARS = 100_000  # a tool result larger than this is cut for the model (and says so)


@dataclass(frozen=True, slots=True)
class ToolResult:
    call: ToolCall
    content: str  # what the model receives
    is_error: bool


class GlyphTools:
    """An MCP session with Glyph, through the official SDK client: ``stdio()`` spawns it,
    ``http()`` connects to it; any other ``server`` is handed to ``mcp.Client`` as is (an
    in-process MCP server, a transport)."""

    def __init__(self, server: StdioServerParameters | str | Any, *, headers: Mapping[str, str] | None = None,
                 errlog: TextIO | None = None, read_timeout_s: float | None = None) -> None:
        self.server = server
        self.headers = dict(headers or {})
        self.errlog = errlog
        self.read_timeout_s = read_timeout_s
        self.tools: list[types.Tool] = []
        self._client: Client | None = None
        self._stack: AsyncExitStack | None = None

    @classmethod
    def stdio(cls, config: Path | str | None = None, *, prompt: str | None = None,
              command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
              errlog: TextIO | None = None) -> GlyphTools:
        """Spawn ``glyph serve`` (this Python's, by default). ``prompt`` is Glyph's ``--prompt``:
        who answers consent prompts (``tty``: this terminal; ``deny``; ``auto``: Glyph's default)."""
        cmd = list(command or (sys.executable, "-m", "glyph"))
        args = [*cmd[1:], "serve"]
        if config is not None:
            args += ["--config", str(config)]
        if prompt is not None:
            args += ["--prompt", prompt]
        # Glyph gets our environment (its config may read ${env:...}; its data dir follows HOME/XDG).
        params = StdioServerParameters(command=cmd[0], args=args, env=dict(os.environ if env is None else env))
        return cls(params, errlog=errlog)

    @classmethod
    def http(cls, url: str, token: str | None = None) -> GlyphTools:
        """``glyph serve --http`` (or the tray app's Glyph); ``token`` is its GLYPH_HTTP_TOKEN."""
        return cls(url, headers={"Authorization": f"Bearer {token}"} if token else None)

    async def __aenter__(self) -> GlyphTools:
        async with AsyncExitStack() as stack:
            transport: Any = self.server
            if isinstance(self.server, str):
                http = await stack.enter_async_context(httpx2.AsyncClient(headers=self.headers, trust_env=False,
                                                                          timeout=httpx2.Timeout(30, read=300)))
                transport = streamable_http_client(self.server, http_client=http)
            elif isinstance(self.server, StdioServerParameters):
                transport = stdio_client(self.server, errlog=self.errlog or sys.stderr)
            client = Client(transport, client_info=CLIENT_INFO, cache=None, read_timeout_seconds=self.read_timeout_s)
            self._client = await stack.enter_async_context(client)
            self.tools = list((await self._client.list_tools()).tools)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self._client = None

    def openai_tools(self) -> list[dict[str, Any]]:
        """Glyph's tools as OpenAI function tools (names are already ``server__tool``)."""
        return [
            {"type": "function", "function": {"name": t.name, "description": t.description or t.title or "",
                                              "parameters": t.input_schema or {"type": "object", "properties": {}}}}
            for t in self.tools
        ]

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one call through Glyph; every way it can fail becomes a result the model reads."""
        assert self._client is not None, "enter the GlyphTools first"
        try:
            arguments = call.parsed()
        except ValueError as exc:
            return ToolResult(call, f"Error: the arguments for {call.name} are not valid JSON ({exc}); "
                                    "the tool was not called.", True)
        try:
            result = await self._client.call_tool(call.name, arguments)
        except MCPError as exc:
            return ToolResult(call, f"Error: {call.name} failed in Glyph: {exc}", True)
        return ToolResult(call, _text_of(result), bool(result.is_error))


def _text_of(result: types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content omitted]")
    if not any(p.strip() for p in parts) and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    text = "\n".join(parts) or "(no output)"
    if result.is_error and not text.lower().startswith(("error", "denied")):
        text = "Error: " + text
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[cut: the result had {len(text)} characters]"
    return text


@dataclass
class LoopResult:
    answer: Answer  # the last answer (the final one, unless the round limit stopped the loop)
    messages: list[dict[str, Any]]  # the whole conversation, tool calls and results included
    tool_results: list[ToolResult] = field(default_factory=list)
    rounds: int = 0
    round_limit_hit: bool = False


OnEvent = Callable[[Event], Awaitable[None] | None]
OnTool = Callable[[ToolCall, ToolResult | None], Awaitable[None] | None]


async def _notify(fn: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if fn is not None:
        out = fn(*args)
        if out is not None:
            await out


async def run_tool_loop(
    client: AsyncOmenClient,
    glyph: GlyphTools,
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str = "auto",
    hints: Hints | None = None,
    max_rounds: int = 8,
    on_event: OnEvent | None = None,
    on_tool: OnTool | None = None,
    **extra: Any,
) -> LoopResult:
    """Stream, run the tool calls through Glyph, send the results back, until the model stops
    calling tools or ``max_rounds`` model turns have run. ``on_event`` sees every stream event
    (for printing), ``on_tool`` each call before (result None) and after it runs."""
    convo = [dict(m) for m in messages]
    tools = glyph.openai_tools()
    result = LoopResult(answer=None, messages=convo)  # type: ignore[arg-type]
    while True:
        async with client.stream(convo, model=model, hints=hints, tools=tools or None, **extra) as stream:
            async for event in stream:
                await _notify(on_event, event)
        answer = stream.answer
        assert answer is not None
        result.answer = answer
        result.rounds += 1
        convo.append(answer.message())
        if not answer.tool_calls:
            return result
        for call in answer.tool_calls:
            await _notify(on_tool, call, None)
            done = await glyph.call(call)
            result.tool_results.append(done)
            convo.append({"role": "tool", "tool_call_id": call.id, "content": done.content})
            await _notify(on_tool, call, done)
        if result.rounds >= max_rounds:
            result.round_limit_hit = True
            return result
