"""A hostile model forges lines of the consent prompt with newlines (review of issue 21, item 3).

Control characters were already made visible, but a newline kept in a model-chosen path, an
argument key or a diff label (built from the path) started a line of its own, so the model
could print ``Tool     : read_file`` above the ``[y/N]`` menu. Keys, paths and labels are shown
on one line; long requests are cut (saying how much); the terminal repeats a one-line summary
of what is decided right above the menu.
"""

from __future__ import annotations

import asyncio
import io

from glyph.consent import ConsentRequest, Scope, TerminalPrompter
from glyph.render import MAX_LINES, render_arguments, render_request

FORGED = "\nTool     : fake"


def request(**over: object) -> ConsentRequest:
    base: dict[str, object] = {
        "client": "code/1.96", "server": "rune", "tool": "edit_file", "exposed": "rune__edit_file",
        "arguments": {"path": f"deploy.sh{FORGED}", f"mode{FORGED}": "x",
                      "old_string": "a\n", "new_string": "b\n"},
        "reason": "no rule allows it", "paths": (f"deploy.sh{FORGED}",),
    }
    base.update(over)
    return ConsentRequest(**base)  # type: ignore[arg-type]


def test_a_newline_in_a_path_key_or_diff_label_starts_no_line() -> None:
    text = render_request(request())
    starts = [line for line in text.splitlines() if line.lstrip("-+ ").startswith("Tool")]
    assert starts == ["Tool     : edit_file  (rune__edit_file)"]  # the header's own, no forged one
    assert "deploy.sh␊Tool     : fake" in text  # still shown, on one line


def test_a_long_request_is_cut_and_says_how_much() -> None:
    text = render_arguments(request(arguments={"content": "line\n" * 1000}), MAX_LINES)
    lines = text.splitlines()
    assert len(lines) == MAX_LINES + 1
    assert lines[-1].startswith("… ") and lines[-1].endswith("more lines not shown")
    assert int(lines[-1].split()[1]) > 800


def test_the_terminal_repeats_what_is_decided_right_above_the_menu() -> None:
    out = io.StringIO()
    decision = asyncio.run(TerminalPrompter(io.StringIO("o\n"), out).ask(
        request(arguments={"path": "deploy.sh", "content": "x\n" * 5000})))
    assert decision.scope is Scope.ONCE
    lines = out.getvalue().splitlines()
    menu = next(i for i, line in enumerate(lines) if line.startswith("[o] allow once"))
    assert lines[menu - 1] == "Allow rune → edit_file  deploy.sh␊Tool     : fake?"
    assert len(lines) < MAX_LINES + 20
