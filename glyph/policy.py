"""The rules engine: allow, ask or deny one call, from the config alone (pure, no I/O).

Order, first hit wins:

1. A path argument outside every root is denied (``consent.deny_outside_roots``, default on).
2. The rules that match the call: any ``deny`` wins, then any ``ask``, then any ``allow``.
   A rule with a ``path`` glob matches a deny/ask when *any* path argument matches it (for a
   deny, a path inside a matching directory counts too), but an allow only when the call has
   path arguments and *all* of them match: a call can never sneak an unmatched path in under
   an allow.
3. Defaults: read-only tools (``readOnlyHint``) inside the roots are allowed when the user
   enabled ``consent.auto_allow_read_only``; "inside" means every path argument is inside a
   root, and a call without path arguments only counts for a server confined to the roots
   (``rooted``, which Rune is). Everything else is asked.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from glyph.casefold import fold_glob
from glyph.config import Action, ConsentSettings, Rule
from glyph.paths import inside, path_covered, path_matches

# The _meta keys Rune reads a call's exclusions from (rune.server.META_EXCLUDE, ...).
META_EXCLUDE = "rune/exclude"
META_EXCLUDE_CONTENT = "rune/exclude_content"


@dataclass(frozen=True)
class CallFacts:
    """What policy needs to know about a call; paths are already resolved."""

    server: str
    tool: str
    paths: tuple[Path, ...] = ()
    read_only: bool = False
    rooted: bool = False


@dataclass(frozen=True)
class Exclusions:
    """One call's deny rules with a path: ``hide`` (names and content), ``content`` (content only)."""

    hide: tuple[Rule, ...] = ()
    content: tuple[Rule, ...] = ()
    fold: frozenset[Path] = frozenset()  # the roots whose file system ignores case

    def __bool__(self) -> bool:
        return bool(self.hide or self.content)

    def globs(self, rules: tuple[Rule, ...]) -> list[str]:
        """The rules' globs as a server takes them: ``~`` expanded (Rune does not expand it), and
        folded to match any case when a root ignores case (a server matches them case-sensitively)."""
        expanded = (os.path.expanduser(r.path) for r in rules if r.path is not None)
        return list(dict.fromkeys(fold_glob(g) if self.fold else g for g in expanded))

    def meta(self) -> dict[str, list[str]]:
        """The call's ``_meta`` entries for a server that executes exclusions (Rune)."""
        out = {}
        if self.hide:
            out[META_EXCLUDE] = self.globs(self.hide)
        if self.content:
            out[META_EXCLUDE_CONTENT] = self.globs(self.content)
        return out


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str


class Policy:
    """``fold``: the roots on a case-insensitive file system (``glyph.casefold``): path globs match
    there in any case, so ``.ENV`` cannot walk around a rule for ``.env``."""

    def __init__(self, rules: Sequence[Rule], roots: Sequence[Path], consent: ConsentSettings,
                 fold: Collection[Path] = ()) -> None:
        self.rules = tuple(rules)
        self.roots = tuple(roots)
        self.consent = consent
        self.fold = frozenset(fold)

    def evaluate(self, facts: CallFacts) -> Verdict:
        if self.consent.deny_outside_roots:
            outside = [p for p in facts.paths if not inside(p, self.roots)]
            if outside:
                return Verdict("deny", f"path outside the roots: {outside[0]}")
        matched = [r for r in self.rules if self._matches(r, facts)]
        for action in ("deny", "ask", "allow"):
            hit = next((r for r in matched if r.action == action), None)
            if hit is not None:
                return Verdict(hit.action, f"rule {hit.index} ({describe(hit)})")
        if self.consent.auto_allow_read_only and facts.read_only:
            in_roots = all(inside(p, self.roots) for p in facts.paths)
            if in_roots and (facts.paths or facts.rooted):
                return Verdict("allow", "read-only inside the roots")
        return Verdict("ask", "no rule allows it")

    def _matches(self, rule: Rule, facts: CallFacts) -> bool:
        if not (fnmatchcase(facts.server, rule.server) and fnmatchcase(facts.tool, rule.tool)):
            return False
        if rule.path is None:
            return True
        if rule.action == "deny":
            return any(path_covered(rule.path, p, self.roots, self.fold) for p in facts.paths)
        hits = [path_matches(rule.path, p, self.roots, self.fold) for p in facts.paths]
        if rule.action == "allow":
            return bool(hits) and all(hits)
        return any(hits)

    def exclusions(self, server: str, tool: str) -> Exclusions:
        """What a call to this tool must not read, show or list: the globs of its deny rules.

        A deny rule with a path holds for what a tool reads without naming the path too (a
        grep over ".", a git diff); the server executes these (Rune does), Glyph checks.
        """
        hide: list[Rule] = []
        content: list[Rule] = []
        for rule in self.rules:
            if (rule.action == "deny" and rule.path is not None and fnmatchcase(server, rule.server)
                    and fnmatchcase(tool, rule.tool)):
                (content if rule.show_names else hide).append(rule)
        return Exclusions(tuple(hide), tuple(content), self.fold)


def describe(rule: Rule) -> str:
    where = f" path {rule.path}" if rule.path else ""
    return f"{rule.action} {rule.server}/{rule.tool}{where}"
