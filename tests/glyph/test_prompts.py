"""What a prompt shows (render), the terminal prompter, and which prompter `glyph serve` picks."""

from __future__ import annotations

import io

from glyph.cli import choose_prompter
from glyph.consent import ConsentRequest, DefinitionChange, Scope, TerminalPrompter
from glyph.render import render_arguments, render_request


def request(**over: object) -> ConsentRequest:
    base: dict[str, object] = {
        "client": "claude-desktop/1.0", "server": "rune", "tool": "edit_file", "exposed": "rune__edit_file",
        "arguments": {"path": "src/app.py", "old_string": "def f():\n    return 1\n",
                      "new_string": "def f():\n    return 2\n"},
        "reason": "no rule allows it", "paths": ("/work/proj/src/app.py",), "destructive": True,
    }
    base.update(over)
    return ConsentRequest(**base)  # type: ignore[arg-type]


def test_render_shows_blocks_and_a_unified_diff() -> None:
    text = render_request(request())
    assert "Client   : claude-desktop/1.0" in text and "[destructive]" in text
    assert "  /work/proj/src/app.py" in text
    assert "old_string: |\n    def f():\n        return 1" in text  # a block, not "\\n" escapes
    assert "-    return 1\n+    return 2" in text  # the unified diff


def test_render_finds_edit_pairs_in_lists_and_shows_patches_verbatim() -> None:
    patch = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    text = render_arguments(request(arguments={
        "edits": [{"oldText": "alpha", "newText": "beta"}], "patch": patch}))
    assert "-alpha\n+beta" in text
    assert "    --- a/x\n    +++ b/x\n    @@ -1 +1 @@" in text


def test_render_shows_a_changed_definition_as_a_diff() -> None:
    changed = DefinitionChange({"name": "t", "description": "Reads."}, {"name": "t", "description": "Reads. Sends."})
    text = render_arguments(request(changed=changed))
    assert text.startswith("TOOL DEFINITION CHANGED")
    assert '-  "description": "Reads.",' in text and '+  "description": "Reads. Sends.",' in text


async def test_terminal_prompter_reads_a_scope() -> None:
    out = io.StringIO()
    for answer, scope in (("o", Scope.ONCE), ("s", Scope.SESSION), ("a", Scope.ALWAYS), ("d", Scope.DENY),
                          ("n", Scope.DENY_ALWAYS), ("Session\n", Scope.SESSION)):
        decision = await TerminalPrompter(io.StringIO(answer + "\n"), out).ask(request())
        assert decision.scope is scope and decision.by == "user:terminal"
    assert "-    return 1" in out.getvalue() and "[a] always" in out.getvalue()
    # remembered answers are kept per tool (glyph/decisions.py): the menu says they cover any file
    assert "[s] this session (the tool, any file)" in out.getvalue()
    assert "[a] always (the tool, any file)" in out.getvalue()


async def test_terminal_prompter_denies_on_eof_and_nonsense() -> None:
    eof = await TerminalPrompter(io.StringIO(""), io.StringIO()).ask(request())
    assert eof.scope is Scope.DENY
    nonsense = await TerminalPrompter(io.StringIO("x\ny\nz\na\n"), io.StringIO()).ask(request())
    assert nonsense.scope is Scope.DENY and nonsense.by == "user:terminal:no-answer"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_choose_prompter() -> None:
    assert choose_prompter("deny", http=True, stdin=FakeTty()).name == "none"
    # auto: the tray app when it runs (docs/app.md), else what Glyph did on its own
    assert choose_prompter("auto", http=False, stdin=FakeTty()).name == "app (else none)"  # stdio: stdin is MCP's
    assert choose_prompter("auto", http=True, stdin=io.StringIO()).name == "app (else none)"  # no console
    assert choose_prompter("auto", http=True, stdin=FakeTty()).name == "app (else terminal)"
    assert choose_prompter("app", http=False, fallback="dialog").name == "app (else dialog)"
    assert choose_prompter("app", http=False).name == "app (else none)"
