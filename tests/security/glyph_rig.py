"""Glyph with Rune behind it (in-process, as `rune.in_process = true` configures it) and an editor's client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp import Client

from glyph.config import parse_config
from glyph.consent import ConsentRequest, Decision, Scope
from glyph.gateway import Gateway
from glyph.server import build_server


class AllowingPrompter:
    """Answers every prompt with 'allow once', and keeps what it was asked."""

    name = "allowing"

    def __init__(self) -> None:
        self.requests: list[ConsentRequest] = []

    async def ask(self, request: ConsentRequest) -> Decision:
        self.requests.append(request)
        return Decision(Scope.ONCE, "user:test")


@asynccontextmanager
async def glyph_with_rune(tmp_path: Path, rules: list[dict[str, Any]], prompter: Any = None,
                          **gateway_kwargs: Any) -> AsyncIterator[tuple[Client, Gateway]]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = parse_config({"roots": [str(root)], "data_dir": str(tmp_path / "data"), "rune": {"in_process": True},
                           "rules": rules}, tmp_path)
    async with Gateway(config, prompter or AllowingPrompter(), **gateway_kwargs) as gateway, \
            Client(build_server(gateway), cache=None) as client:
        yield client, gateway


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


Detector = Callable[[Path], bool]
