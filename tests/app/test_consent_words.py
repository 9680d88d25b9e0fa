"""The consent dialog's plain words, read from the tool call itself (app/consent_words.py)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from app.consent_words import action, changed_lines, headline, target, why
from glyph.consent import ConsentRequest
from rune.fs import TOOLS


def request(arguments: dict[str, Any], paths: tuple[str, ...] = (), **over: Any) -> ConsentRequest:
    base: dict[str, Any] = {"client": "Cursor/0.48", "server": "rune", "tool": "edit_file",
                            "exposed": "rune__edit_file", "arguments": arguments, "reason": "no rule allows it",
                            "paths": paths}
    base.update(over)
    return ConsentRequest(**base)


def test_the_real_edit_file_call_reads_as_a_change_of_lines() -> None:
    args = {"path": "src/invoice.py", "edits": [{"old_text": "TAX = 0.19\n", "new_text": "TAX = 0.21\n"}]}
    jsonschema.validate(args, next(t for t in TOOLS if t.name == "edit_file").input_schema)
    req = request(args, ("/home/ana/shop/src/invoice.py",))
    assert headline(req) == "Cursor/0.48 wants to change 1 line in src/invoice.py"
    two = request({"path": "a.py", "edits": [{"old_text": "a\nb\nc\n", "new_text": "a\nB\nC\n"},
                                              {"old_text": "x", "new_text": "y"}]}, ("/p/a.py",))
    assert action(two) == "wants to change 3 lines in a.py"


@pytest.mark.parametrize(("old", "new", "n"), [("a\n", "b\n", 1), ("a\n", "a\nb\nc\n", 2), ("a\nb\n", "", 2),
                                               ("same", "same", 0)])
def test_changed_lines(old: str, new: str, n: int) -> None:
    assert changed_lines(old, new) == n


def test_other_shapes() -> None:
    assert action(request({"file_path": "x.py", "old_string": "1", "new_string": "2"}, ("/w/x.py",))) == \
        "wants to change 1 line in x.py"
    assert action(request({"path": "notes.md", "content": "a\nb\n"}, ("/w/notes.md",), tool="write_file")) == \
        "wants to write 2 lines to notes.md"
    assert action(request({"path": "a"}, ("/w/a",), tool="read_file", read_only=True)) == \
        "wants to read a (with read_file)"
    assert action(request({"query": "x"}, tool="search")) == "wants to run search (rune)"
    assert action(request({"path": "a"}, ("/w/a", "/w/b", "/w/c"), tool="move")) == \
        "wants to run move on a and 2 more files"


def test_the_path_shown_is_never_shorter_than_the_truth() -> None:
    """A model's "../" path, or one Glyph resolved elsewhere (a symlink), shows the resolved path."""
    assert target(request({"path": "../../etc/passwd"}, ("/etc/passwd",))) == "/etc/passwd"
    assert target(request({"path": "src/a.py"}, ("/elsewhere/b.py",))) == "/elsewhere/b.py"
    assert target(request({"path": "x" * 200}, ())).startswith("…") and len(target(request({"path": "x" * 200}))) == 80


def test_untrusted_names_are_made_visible_and_why_holds_the_rule_words() -> None:
    req = request({"path": "a\u202eb.py", "content": "x"}, ("/w/a\u202eb.py",), client="ed\x1b[2J",
                  description="Edits.\nSecond line \u200b", destructive=True)
    assert headline(req) == "ed␛[2J wants to write 1 line to a⟨U+202E⟩b.py"
    text = why(req)
    assert "no rule allows it · destructive" in text and "rune__edit_file" in text
    assert "Edits." in text and "Second line" not in text
