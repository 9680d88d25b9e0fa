"""The pure rules engine and path recognition, as tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from glyph.config import ConsentSettings, Rule
from glyph.paths import extract_paths, glob_to_regex, inside, resolve
from glyph.policy import CallFacts, Policy

ROOT = Path("/work/proj")
OTHER = Path("/work/other")


def policy(*rules: Rule, auto_ro: bool = False, outside: bool = True) -> Policy:
    numbered = [Rule(r.action, r.server, r.tool, r.path, i + 1) for i, r in enumerate(rules)]
    return Policy(numbered, [ROOT, OTHER], ConsentSettings(auto_allow_read_only=auto_ro, deny_outside_roots=outside))


def facts(tool: str = "write_file", *paths: str, server: str = "rune", ro: bool = False, rooted: bool = False
          ) -> CallFacts:
    return CallFacts(server, tool, tuple(Path(p) for p in paths), ro, rooted)


@pytest.mark.parametrize(("pol", "call", "action", "reason"), [
    (policy(), facts(), "ask", "no rule allows it"),
    (policy(Rule("allow")), facts(), "allow", "rule 1"),
    (policy(Rule("allow"), Rule("deny", tool="write_*")), facts(), "deny", "rule 2"),  # deny wins, any order
    (policy(Rule("deny", tool="write_*"), Rule("allow")), facts("read_file"), "allow", "rule 2"),
    (policy(Rule("allow"), Rule("ask", server="rune")), facts(), "ask", "rule 2"),  # ask beats allow
    (policy(Rule("allow", server="github")), facts(), "ask", "no rule"),  # server glob
    (policy(Rule("deny", path="**/.env")), facts("read_file", "/work/proj/a/.env"), "deny", "rule 1"),
    (policy(Rule("deny", path="**/.env")), facts("read_file", "/work/proj/a/env"), "ask", "no rule"),
    # an allow with a path glob needs every path to match, and at least one path
    (policy(Rule("allow", path="src/**")), facts("w", "/work/proj/src/a.py", "/work/proj/src/b/c.py"), "allow", "rule 1"),
    (policy(Rule("allow", path="src/**")), facts("w", "/work/proj/src/a.py", "/work/proj/setup.py"), "ask", "no rule"),
    (policy(Rule("allow", path="src/**")), facts("w"), "ask", "no rule"),
    # a deny covers what is inside a matching directory (as Rune's exclusions and git pathspecs do)
    (policy(Rule("deny", path="**/secrets")), facts("read_file", "/work/proj/a/secrets/k.pem"), "deny", "rule 1"),
    (policy(Rule("ask", path="**/secrets")), facts("read_file", "/work/proj/a/secrets/k.pem"), "ask", "no rule"),
    (policy(Rule("deny", path="**")), facts("read_file", "/work/proj"), "deny", "rule 1"),  # the root is "."
    (policy(Rule("deny", path="/work/*")), facts("read_file", "/work/proj/a"), "ask", "no rule"),  # not above it
    # a deny with a path glob needs only one
    (policy(Rule("deny", path="/work/other/**")), facts("w", "/work/proj/a", "/work/other/b"), "deny", "rule 1"),
    # outside the roots: denied before any rule
    (policy(Rule("allow")), facts("w", "/etc/passwd"), "deny", "outside the roots"),
    (policy(Rule("allow"), outside=False), facts("w", "/etc/passwd"), "allow", "rule 1"),
    # read-only defaults
    (policy(auto_ro=True), facts("read_file", "/work/proj/a", ro=True), "allow", "read-only inside the roots"),
    (policy(), facts("read_file", "/work/proj/a", ro=True), "ask", "no rule"),  # not enabled
    (policy(auto_ro=True), facts("status", ro=True), "ask", "no rule"),  # no paths, not rooted
    (policy(auto_ro=True), facts("status", ro=True, rooted=True), "allow", "read-only"),  # Rune is rooted
    (policy(auto_ro=True), facts("write_file", "/work/proj/a"), "ask", "no rule"),  # not read-only
    (policy(Rule("ask", tool="read_file"), auto_ro=True), facts("read_file", "/work/proj/a", ro=True), "ask", "rule 1"),
])
def test_policy_table(pol: Policy, call: CallFacts, action: str, reason: str) -> None:
    verdict = pol.evaluate(call)
    assert verdict.action == action
    assert reason in verdict.reason


@pytest.mark.parametrize(("args", "schema", "expected"), [
    ({"path": "a.py", "content": "x"}, None, ["a.py"]),
    ({"paths": ["a", "b"]}, None, ["a", "b"]),
    ({"source": "a", "destination": "b"}, None, ["a", "b"]),
    ({"file_path": "a", "target_dir": "b", "filePath": "c"}, None, ["a", "b", "c"]),
    ({"edits": [{"path": "a", "newText": "x"}, {"path": "b"}]}, None, ["a", "b"]),
    ({"location": "x"}, {"properties": {"location": {"type": "string", "format": "path"}}}, ["x"]),
    ({"uri": "file:///tmp/x", "url": "https://example.com"}, None, ["file:///tmp/x"]),
    ({"query": "needle", "content": "path/looking/text"}, None, []),
    ({"path": "a", "paths": ["a"]}, None, ["a"]),  # deduplicated
])
def test_path_arguments_are_recognised(args: dict[str, object], schema: object, expected: list[str]) -> None:
    assert extract_paths(args, schema) == expected


def test_resolution_relative_tilde_and_dotdot(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert resolve("a/b.txt", [root]) == root / "a" / "b.txt"
    assert resolve("a/../../x", [root]) == root.parent / "x"
    assert resolve("~", [root]) == Path.home().resolve()
    assert resolve(f"file://{root}/f%20g", [root]) == root / "f g"
    assert inside(root, [root]) and inside(root / "a", [root]) and not inside(root.parent, [root])
    assert not inside(Path(str(root) + "-sibling"), [root])  # a prefix is not a parent


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("**/.env", ".env", True),
    ("**/.env", "a/b/.env", True),
    ("*.py", "a.py", True),
    ("*.py", "src/a.py", False),
    ("src/**", "src/a/b", True),
    ("src/*.[ch]", "src/x.c", True),
    ("src/*.[!ch]", "src/x.c", False),
])
def test_globs(pattern: str, path: str, hit: bool) -> None:
    assert (glob_to_regex(pattern).match(path) is not None) == hit


def test_a_calls_exclusions_are_its_deny_rules_with_a_path() -> None:
    numbered = [Rule("deny", tool="*", path="**/.env", index=1), Rule("deny", tool="read_*", path="~/x/*", index=2),
                Rule("deny", server="github", path="*.key", index=3), Rule("ask", path="**/ask", index=4),
                Rule("deny", tool="grep", path="logs/**", index=5, show_names=True), Rule("deny", tool="grep", index=6)]
    pol = Policy(numbered, [ROOT], ConsentSettings())
    grep = pol.exclusions("rune", "grep")
    assert [r.index for r in grep.hide] == [1] and [r.index for r in grep.content] == [5]
    assert grep.meta() == {"rune/exclude": ["**/.env"], "rune/exclude_content": ["logs/**"]}
    read = pol.exclusions("rune", "read_file").meta()
    assert read == {"rune/exclude": ["**/.env", str(Path("~/x/*").expanduser())]}
    assert not pol.exclusions("other", "write_file").content


def test_meta_keys_are_the_ones_rune_reads() -> None:
    from glyph.policy import META_EXCLUDE, META_EXCLUDE_CONTENT
    from rune import server

    assert (META_EXCLUDE, META_EXCLUDE_CONTENT) == (server.META_EXCLUDE, server.META_EXCLUDE_CONTENT)
