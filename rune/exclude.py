"""Exclusions: paths the caller told Rune to treat as absent. Rune executes them; it never decides them.

Two sets of glob patterns, given to ``Rune(exclude=..., exclude_content=...)`` or per call:

- ``exclude``: the path is hidden. No tool reads, shows or lists it, and naming it is refused.
- ``exclude_content``: only its content is withheld. Listings (``list_directory``,
  ``directory_tree``, ``glob``, ``git_status``) still show its name; every tool that would
  read or show content refuses it or leaves it out.

Pattern syntax is Glyph's path-glob syntax: ``**`` spans directories, ``*`` and ``?`` stay
within one component, ``[...]`` as in fnmatch. A relative pattern matches a path relative
to any root; an absolute one matches the absolute path (the root as given or its real
path). A path is covered when it *or any directory above it* matches, as git pathspecs and
``.gitignore`` treat a matched directory. For git, the patterns become
``:(exclude,glob)`` pathspecs relative to the repository (:meth:`Exclusions.pathspecs`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rune.errors import RuneError

if TYPE_CHECKING:
    from rune.sandbox import Location, Root

MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 4096


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``**`` crosses directories, ``*`` and ``?`` do not; ``[...]`` as in fnmatch (Glyph's syntax)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _components(pattern: str) -> tuple[str, ...]:
    return tuple(p for p in pattern.split("/") if p not in ("", "."))


def _component_regex(comp: str) -> re.Pattern[str]:
    # Within one component "**" can only mean "*": nothing here crosses a "/".
    return glob_to_regex(re.sub(r"\*\*+", "*", comp))


@dataclass(frozen=True)
class _Pattern:
    text: str
    absolute: bool
    regex: re.Pattern[str]
    comps: tuple[str, ...]
    comp_res: tuple[re.Pattern[str] | None, ...]  # None for a "**" component

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        if not isinstance(text, str) or not text or "\0" in text or len(text) > MAX_PATTERN_CHARS:
            raise RuneError("invalid_arguments", "exclusion patterns are non-empty strings without NUL bytes")
        absolute = text.startswith("/")
        comps = _components(text)
        if not comps:
            raise RuneError("invalid_arguments", f"exclusion pattern {text!r} names no path")
        regex = glob_to_regex("/".join(comps))
        return cls(text, absolute, regex, comps, tuple(None if c == "**" else _component_regex(c) for c in comps))

    def residuals(self, above: Sequence[str], below: Sequence[str]) -> tuple[bool, set[int]]:
        """Walk a directory's components through the pattern: (covered, states left).

        ``above`` are the components of the root itself (for absolute patterns), where a match
        does not count: a root is never excluded. ``below`` lead from the root to the directory;
        a match there covers the directory and so everything inside. A state is the index of the
        next pattern component; the pattern's tail from a state is what a path inside must match.
        """
        done = len(self.comps)
        states = self._closure({0}) - {done}
        for comp in above:
            states = self._step(states, comp) - {done}
        for comp in below:
            states = self._step(states, comp)
            if done in states:
                return True, set()
        return False, states

    def _step(self, states: set[int], comp: str) -> set[int]:
        moved: set[int] = set()
        for i in states:
            regex = self.comp_res[i]
            if regex is None:
                moved.add(i)  # "**" eats this component and stays
            elif regex.match(comp) is not None:
                moved.add(i + 1)
        return self._closure(moved)

    def _closure(self, states: set[int]) -> set[int]:
        out = set(states)
        todo = list(states)
        while todo:
            i = todo.pop()
            if i < len(self.comps) and self.comp_res[i] is None and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return out


def _glob_escape(comp: str) -> str:
    return comp.replace("\\", "\\\\")


@dataclass(frozen=True)
class Exclusions:
    """The two pattern sets of one call (or of a Rune), with memoised matching."""

    hide: tuple[str, ...] = ()
    content: tuple[str, ...] = ()
    _hide: tuple[_Pattern, ...] = field(default=(), repr=False, compare=False)
    _content: tuple[_Pattern, ...] = field(default=(), repr=False, compare=False)
    _memo: dict[tuple[bool, int, tuple[str, ...]], bool] = field(default_factory=dict, repr=False, compare=False)
    # Per set (hide, content): one alternation for the relative patterns and one for the absolute.
    _regexes: dict[bool, tuple[re.Pattern[str] | None, re.Pattern[str] | None]] = field(
        default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, hide: Iterable[str] = (), content: Iterable[str] = ()) -> Exclusions:
        hide_t, content_t = _unique(hide), _unique(content)
        if len(hide_t) + len(content_t) > MAX_PATTERNS:
            raise RuneError("invalid_arguments", f"at most {MAX_PATTERNS} exclusion patterns")
        return cls(hide_t, content_t, tuple(_Pattern.parse(p) for p in hide_t),
                   tuple(_Pattern.parse(p) for p in content_t))

    def merged(self, hide: Iterable[str] = (), content: Iterable[str] = ()) -> Exclusions:
        hide_t, content_t = tuple(hide), tuple(content)
        if not hide_t and not content_t:
            return self
        return Exclusions.of((*self.hide, *hide_t), (*self.content, *content_t))

    def __bool__(self) -> bool:
        return bool(self.hide or self.content)

    # -- matching ---------------------------------------------------------------------------

    def hidden(self, loc: Location) -> bool:
        """The path may not be named, listed or read."""
        return bool(self._hide) and self._covered(False, loc.root, loc.parts)

    def withheld(self, loc: Location) -> bool:
        """The path's content may not be read or shown (hidden paths included)."""
        return bool(self) and (self.hidden(loc) or (bool(self._content) and self._covered(True, loc.root, loc.parts)))

    def _covered(self, content: bool, root: Root, parts: tuple[str, ...]) -> bool:
        if not parts:
            return False  # a root itself is never excluded: it would make Rune useless, not safer
        key = (content, root.index, parts)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._covered(content, root, parts[:-1]) or self._matches(content, root, "/".join(parts))
            if len(self._memo) < 100_000:
                self._memo[key] = hit
        return hit

    def _matches(self, content: bool, root: Root, rel: str) -> bool:
        regexes = self._regexes.get(content)
        if regexes is None:
            patterns = self._content if content else self._hide
            regexes = self._regexes[content] = (_alternation([p for p in patterns if not p.absolute]),
                                                _alternation([p for p in patterns if p.absolute]))
        relative, absolute = regexes
        if relative is not None and relative.match(rel) is not None:
            return True
        return absolute is not None and any(absolute.match(f"{form.strip('/')}/{rel}".lstrip("/")) is not None
                                            for form in {root.path, root.real})

    # -- git --------------------------------------------------------------------------------

    def pathspecs(self, worktree: Location, *, content: bool) -> list[str]:
        """``:(exclude,glob)`` pathspecs, relative to the worktree, for what git must leave out.

        ``content`` includes the withheld set (for diffs and patches), not only the hidden one.
        """
        patterns = (*self._hide, *(self._content if content else ()))
        specs: set[str] = set()
        for pattern in patterns:
            for above in _root_prefixes(pattern, worktree.root):
                covered, states = pattern.residuals(above, worktree.parts)
                if covered:
                    return [":(exclude)*"]  # the whole repository is covered ("*" without glob magic spans "/")
                for i in states:
                    specs.add(":(exclude,glob)" + "/".join(_glob_escape(c) for c in pattern.comps[i:]))
        return sorted(specs)


def _unique(patterns: Iterable[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):
        raise RuneError("invalid_arguments", "exclusions are a list of glob patterns, not one string")
    out: dict[str, None] = {}
    for p in patterns:
        out.setdefault(p, None)
    return tuple(out)


def _root_prefixes(pattern: _Pattern, root: Root) -> list[tuple[str, ...]]:
    """Components to put before a root-relative path so that ``pattern`` can be matched against it."""
    if not pattern.absolute:
        return [()]
    return [tuple(p for p in form.split("/") if p) for form in {root.path, root.real}]


def _alternation(patterns: Sequence[_Pattern]) -> re.Pattern[str] | None:
    """One regex for several patterns: a path is tested once, not once per pattern."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p.regex.pattern})" for p in patterns), re.DOTALL)
