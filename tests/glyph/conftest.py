"""Glyph test helpers: a config in tmp, a scripted prompter, an editor's client on Glyph."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

from glyph.config import GlyphConfig, ServerSpec, parse_config
from glyph.consent import ConsentRequest, Decision, Scope
from glyph.gateway import Gateway
from glyph.server import build_server
from tests.glyph.fake_server import FakeServer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt creates the QApplication

HANG = "hang"


class ScriptedPrompter:
    """Answers prompts from a script: a Scope, an exception to raise, or HANG (never answers)."""

    name = "scripted"

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[ConsentRequest] = []

    async def ask(self, request: ConsentRequest) -> Decision:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else Scope.DENY
        if isinstance(answer, BaseException):
            raise answer
        if answer == HANG:
            await anyio.sleep_forever()
        if isinstance(answer, Scope):
            return Decision(answer, "user:script")
        return answer  # type: ignore[no-any-return]  # deliberately malformed answers


def make_config(tmp_path: Path, **raw: Any) -> GlyphConfig:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    base: dict[str, Any] = {"roots": [str(root)], "data_dir": str(tmp_path / "data"), "rune": {"enabled": False}}
    base.update(raw)
    return parse_config(base, tmp_path)


@dataclass
class Rig:
    client: Client
    gateway: Gateway
    fake: FakeServer
    prompter: ScriptedPrompter
    root: Path

    async def call(self, tool: str, args: dict[str, Any] | None = None) -> types.CallToolResult:
        return await self.client.call_tool(tool, args or {})

    def text(self, result: types.CallToolResult) -> str:
        return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))

    def last_audit(self) -> dict[str, Any]:
        return self.gateway.audit.rows(1)[0]


@asynccontextmanager
async def rig(config: GlyphConfig, prompter: ScriptedPrompter | None = None, fake: FakeServer | None = None,
              **client_kwargs: Any) -> AsyncIterator[Rig]:
    prompter = prompter or ScriptedPrompter()
    fake = fake or FakeServer()
    gateway = Gateway(config, prompter)
    gateway.add_server(ServerSpec(name="fake"), fake.server)
    async with gateway:
        client_kwargs.setdefault("client_info", types.Implementation(name="test-editor", version="1"))
        async with Client(build_server(gateway), cache=None, **client_kwargs) as client:
            yield Rig(client, gateway, fake, prompter, config.roots[0])


@pytest.fixture
def config(tmp_path: Path) -> GlyphConfig:
    return make_config(tmp_path)
