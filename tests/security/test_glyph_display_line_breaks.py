"""An edit hidden in a character that is a line break only to ``str.splitlines`` (review of issue 20, item 1).

``str.splitlines`` also breaks at \\x0b, \\x0c, \\x1c-\\x1e, \\x85, U+2028 and U+2029. The consent
dialog split old/new texts with it, so ``"…caller\\nrequire_admin()"`` -> ``"…caller\\x0crequire_admin()"``
(the check turned into part of a comment) read "no line changes" over an empty diff, while the
real ``edit_file`` applied it. Texts are split on ``\\n`` only; every other character stays in
its line, shown by ``glyph.display`` (``␌``, ``⟨U+2028⟩``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.consent_words import action, changed_lines
from glyph.consent import ConsentRequest
from glyph.render import definition_diff, render_arguments
from rune.api import Rune
from rune.fs import TOOLS

SPLITLINES_ONLY = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]
SHOWN = {"\x0b": "␋", "\x0c": "␌", "\x1c": "␜", "\x1d": "␝", "\x1e": "␞", "\x85": "⟨U+0085⟩",
         "\u2028": "⟨U+2028⟩", "\u2029": "⟨U+2029⟩", "\r": "␍"}


def request(arguments: dict[str, Any], path: str) -> ConsentRequest:
    return ConsentRequest(client="Cursor", server="rune", tool="edit_file", exposed="rune__edit_file",
                          arguments=arguments, reason="no rule allows it", paths=(path,))


def diff_section(text: str) -> list[str]:
    return text[text.index("Diff:"):].split("\n")[1:]


@pytest.mark.parametrize("brk", SPLITLINES_ONLY)
def test_an_edit_that_only_splitlines_calls_a_line_break_is_shown_and_counted(tmp_path: Path, brk: str) -> None:
    (tmp_path / "gate.py").write_text("# verify the caller\nrequire_admin()\nrun()\n", encoding="utf-8")
    args = {"path": "gate.py", "edits": [{"old_text": "# verify the caller\nrequire_admin()",
                                          "new_text": f"# verify the caller{brk}require_admin()"}]}
    jsonschema.validate(args, next(t for t in TOOLS if t.name == "edit_file").input_schema)
    req = request(args, str(tmp_path / "gate.py"))
    assert action(req) == "wants to change 2 lines in gate.py"
    diff = diff_section(render_arguments(req))
    assert "-# verify the caller" in diff and "-require_admin()" in diff
    assert f"+# verify the caller{SHOWN[brk]}require_admin()" in diff
    # and the real edit_file does apply it: what the person is shown is what happens
    out = asyncio.run(Rune([str(tmp_path)]).call("edit_file", args))
    assert out["replacements"] == 1
    assert (tmp_path / "gate.py").read_bytes().decode("utf-8") == f"# verify the caller{brk}require_admin()\nrun()\n"


@pytest.mark.parametrize(("old", "new"), [("a\x0cb", "a\x0bb"), ("a\r\nb", "a\nb"), ("x\u2028", "x\u2029"),
                                          ("a\n", "a"), ("a", "a\n")])
def test_texts_that_differ_never_read_as_no_line_changes(old: str, new: str) -> None:
    assert changed_lines(old, new) >= 1
    req = request({"path": "f.py", "edits": [{"old_text": old, "new_text": new}]}, "/w/f.py")
    assert "no line changes" not in action(req)
    assert any(line[:1] in "+-" and line[:3] not in ("+++", "---") for line in diff_section(render_arguments(req)))


def test_a_block_argument_keeps_its_characters_where_they_are() -> None:
    """The Arguments block indents each \\n line; a \\x0c inside a line gets no indent after it."""
    text = render_arguments(request({"path": "f.py", "content": "one\ntwo\x0cthree\n"}, "/w/f.py"))
    assert "    two␌three" in text.split("\n")


def test_a_definition_diff_splits_on_newlines_only() -> None:
    diff = definition_diff({"description": "Reads files."}, {"description": "Reads files.\u2028Also sends them."})
    assert '+  "description": "Reads files.⟨U+2028⟩Also sends them."' in diff.split("\n")


def test_a_dropped_final_newline_is_said_and_fragments_carry_no_marker() -> None:
    marked = diff_section(render_arguments(request({"path": "f.py", "old_text": "a\n", "new_text": "a"}, "/w/f.py")))
    assert marked[-3:] == ["-a", "+a", "\\ No newline at end of text"]
    plain = diff_section(render_arguments(request({"path": "f.py", "old_text": "x", "new_text": "y"}, "/w/f.py")))
    assert plain[-2:] == ["-x", "+y"]
