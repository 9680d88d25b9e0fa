"""The consent dialog's plain words, read from the tool call itself (app/consent_words.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.consent_words import action, changed_lines, headline, target, why
from glyph.consent import ConsentRequest
from glyph.render import render_arguments
from rune.api import Rune
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
    assert action(request({"path": "notes.md", "content": "a\nb\n"}, ("/w/notes.md",), tool="append")) == \
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


def test_replace_all_says_every_match_as_the_real_edit_file_does_it(tmp_path: Path) -> None:
    """Review of issue 20, item 2: one pair with replace_all read "change 1 line"; rune replaced 50."""
    (tmp_path / "auth.py").write_text("".join(f"def f{i}():\n    check_auth()\n    return {i}\n" for i in range(50)))
    args = {"path": "auth.py", "edits": [{"old_text": "    check_auth()\n", "new_text": "    pass\n",
                                          "replace_all": True}]}
    jsonschema.validate(args, next(t for t in TOOLS if t.name == "edit_file").input_schema)
    req = request(args, (str(tmp_path / "auth.py"),))
    assert headline(req) == "Cursor/0.48 wants to replace every match of “check_auth()” in auth.py"
    assert "every match" in render_arguments(req)  # the diff's label says it too
    out = asyncio.run(Rune([str(tmp_path)]).call("edit_file", args))
    assert out["replacements"] == 50
    mixed = request({"path": "a.py", "edits": [{"old_text": "a\n", "new_text": "b\n"},
                                               {"old_text": "x = 1\ny = 2\n", "new_text": "", "replace_all": True},
                                               {"old_text": "z", "new_text": "w", "replaceAll": True}]}, ("/p/a.py",))
    assert action(mixed) == "wants to change 1 line and replace every match of “x = 1 …” and 1 more text in a.py"
    claude_code = request({"file_path": "a.py", "old_string": "foo", "new_string": "bar", "replace_all": True},
                          ("/p/a.py",), tool="Edit")
    assert action(claude_code) == "wants to replace every match of “foo” in a.py"
    off = request({"path": "a.py", "edits": [{"old_text": "a", "new_text": "b", "replace_all": False}]}, ("/p/a.py",))
    assert action(off) == "wants to change 1 line in a.py"


def test_write_file_says_it_replaces_or_creates_the_whole_file(tmp_path: Path) -> None:
    """rune's write_file creates the file or replaces all of its contents (atomically)."""
    (tmp_path / "notes.md").write_text("a long file\n" * 100)
    existing = request({"path": "notes.md", "content": "a\nb\n"}, (str(tmp_path / "notes.md"),), tool="write_file")
    assert action(existing) == "wants to replace the contents of notes.md with 2 lines"
    new = request({"path": "new.md", "content": "a\nb\n"}, (str(tmp_path / "new.md"),), tool="write_file")
    assert action(new) == "wants to create new.md with 2 lines"
    emptied = request({"path": "notes.md", "content": ""}, (str(tmp_path / "notes.md"),), tool="write_file")
    assert action(emptied) == "wants to empty notes.md"
    # the real tool does exactly that
    out = asyncio.run(Rune([str(tmp_path)]).call("write_file", {"path": "notes.md", "content": "a\nb\n"}))
    assert out["created"] is False and (tmp_path / "notes.md").read_text() == "a\nb\n"
