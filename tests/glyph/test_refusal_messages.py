"""What the model is told when a call is refused, for each way a consent prompt can end (issue 9, item 6).

A denial that nobody made must not read as the user's refusal: under stdio with no prompter,
the model used to be told "the user did not allow ..." although nobody had been asked.
"""

from __future__ import annotations

from pathlib import Path

import mcp_types as types
from mcp import Client

from glyph.config import ServerSpec
from glyph.consent import DenyPrompter, Scope
from glyph.gateway import Gateway
from glyph.server import build_server
from tests.glyph.conftest import HANG, ScriptedPrompter, make_config, rig
from tests.glyph.fake_server import FakeServer


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_no_prompter_says_nobody_could_be_asked_and_how_to_fix_it(tmp_path: Path) -> None:
    gateway = Gateway(make_config(tmp_path), DenyPrompter())  # what `glyph serve` under stdio gets
    gateway.add_server(ServerSpec(name="fake"), FakeServer().server)
    async with gateway, Client(build_server(gateway), cache=None) as client:
        result = await client.call_tool("fake__write_file", {"path": "a.txt", "content": "x"})
        message = text(result)
        assert result.is_error
        assert "no one could be asked" in message
        assert "did not allow" not in message and "refused" not in message.replace("has not refused", "")
        assert "--prompt tty" in message and "tray app" in message
        assert '[[rules]] server = "fake" tool = "write_file" action = "allow"' in message
        assert gateway.audit.rows(1)[0]["decided_by"] == "fail-closed:no-prompter:deny"


async def test_user_denial_says_the_user_refused(tmp_path: Path) -> None:
    async with rig(make_config(tmp_path), ScriptedPrompter(Scope.DENY, Scope.DENY_ALWAYS)) as r:
        once = r.text(await r.call("fake__status"))
        assert once == "Denied: the user refused fake__status when asked (this call only)."
        always = r.text(await r.call("fake__status"))
        assert always == "Denied: the user refused fake__status and chose to always deny it."
        later = r.text(await r.call("fake__status"))
        assert later == "Denied: fake__status is set to 'always deny'."
        assert len(r.prompter.requests) == 2


async def test_timeout_says_nobody_answered(tmp_path: Path) -> None:
    config = make_config(tmp_path, consent={"prompt_timeout_s": 0.2})
    async with rig(config, ScriptedPrompter(HANG)) as r:
        message = r.text(await r.call("fake__status"))
        assert message.startswith("Denied: nobody answered the consent prompt for fake__status within 0.2 s")
        assert "user refused" not in message
        assert r.last_audit()["decided_by"] == "fail-closed:timeout:deny"


async def test_broken_prompter_says_the_prompt_failed(tmp_path: Path) -> None:
    async with rig(make_config(tmp_path), ScriptedPrompter(RuntimeError("dialog crashed"))) as r:
        message = r.text(await r.call("fake__status"))
        assert "the consent prompt for fake__status failed (error RuntimeError)" in message
        assert "the user did not answer" in message and "action = \"allow\"" in message


async def test_rule_denial_names_the_rule(tmp_path: Path) -> None:
    config = make_config(tmp_path, rules=[{"server": "fake", "tool": "status", "action": "deny"}])
    async with rig(config) as r:
        message = r.text(await r.call("fake__status"))
        assert message == "Denied by Glyph policy: rule 1 (deny fake/status)"
        assert r.prompter.requests == []


async def test_no_prompter_under_http_does_not_blame_stdio(tmp_path: Path) -> None:
    from glyph.cli import choose_prompter

    class NoTty:
        def isatty(self) -> bool:
            return False

    prompter = choose_prompter("deny", True, stdin=NoTty())  # type: ignore[arg-type]
    gateway = Gateway(make_config(tmp_path), prompter)
    gateway.add_server(ServerSpec(name="fake"), FakeServer().server)
    async with gateway, Client(build_server(gateway), cache=None) as client:
        message = text(await client.call_tool("fake__write_file", {"path": "a.txt", "content": "x"}))
        assert "no one could be asked" in message and "serves HTTP" in message
        assert "stdio" not in message
        assert gateway.audit.rows(1)[0]["decided_by"] == "fail-closed:no-prompter-http:deny"
