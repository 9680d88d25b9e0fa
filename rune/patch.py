"""Reading file names out of git's patch and stat text, to cut out the files a call excludes.

Rune passes exclusions to git as pathspecs, so git normally never prints an excluded file.
These functions are the second line: every file section of a patch whose names include an
excluded path (either side of a rename or copy, binary or not, combined merge diffs) is
dropped, and so is a section whose names cannot be read at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Excluded = Callable[[str], bool]

_SECTION = re.compile(r"^diff --(?:git|cc|combined) ", re.MULTILINE)
_OCTAL = re.compile(r"\\([0-7]{3})")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}


def unquote(text: str) -> str:
    """A name as git wrote it: C-quoted (``"a\\tb"``, octal bytes) or plain."""
    if not (len(text) >= 2 and text.startswith('"') and text.endswith('"')):
        return text
    body = text[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            m = _OCTAL.match(body, i)
            if m is not None:
                out.append(int(m.group(1), 8))
                i += 4
                continue
            out += _ESCAPES.get(body[i + 1], body[i + 1]).encode("utf-8", "surrogateescape")
            i += 2
            continue
        out += c.encode("utf-8", "surrogateescape")
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _quoted_pair(rest: str) -> tuple[str, str] | None:
    """``"a/x" "b/y"``, ``"a/x" b/y`` or ``a/x "b/y"``."""
    m = re.fullmatch(r'("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)', rest)
    if m is None or '"' not in rest:
        return None
    return unquote(m.group(1)), unquote(m.group(2))


def _strip(name: str, prefix: str) -> str | None:
    if name == "/dev/null":
        return None
    return name[len(prefix):] if name.startswith(prefix) else name


def _diff_git_names(rest: str) -> list[str]:
    pair = _quoted_pair(rest)
    if pair is not None:
        return [n for n in (_strip(pair[0], "a/"), _strip(pair[1], "b/")) if n is not None]
    if not rest.startswith("a/") or " b/" not in rest:
        return []
    names: list[str] = []
    for m in re.finditer(r" b/", rest):  # "a/x b/y" is ambiguous when names hold " b/": try every split
        names += [rest[2:m.start()], rest[m.end():]]
    return names


def section_names(section: str) -> list[str] | None:
    """Every name a file section's header mentions; None when the header cannot be read."""
    names: list[str] = []
    lines = section.split("\n")
    first = lines[0]
    if first.startswith("diff --git "):
        got = _diff_git_names(first[len("diff --git "):])
        if not got:
            return None
        names += got
    else:  # diff --cc NAME / diff --combined NAME
        names.append(unquote(first.split(" ", 2)[2]))
    for line in lines[1:]:
        if line.startswith(("@@", "GIT binary patch")):
            break
        for key, prefix in (("--- ", "a/"), ("+++ ", "b/"), ("rename from ", ""), ("rename to ", ""),
                            ("copy from ", ""), ("copy to ", "")):
            if line.startswith(key):
                name = _strip(unquote(line[len(key):].rstrip("\t")), prefix)
                if name is not None:
                    names.append(name)
        if line.startswith("Binary files ") and line.endswith(" differ"):
            middle = line[len("Binary files "):-len(" differ")]
            for m in re.finditer(" and ", middle):
                for name, prefix in ((middle[:m.start()], "a/"), (middle[m.end():], "b/")):
                    stripped = _strip(unquote(name), prefix)
                    if stripped is not None:
                        names.append(stripped)
    return names


def drop_sections(text: str, excluded: Excluded) -> str:
    """``text`` without the file sections that name an excluded path (or cannot be read)."""
    starts = [m.start() for m in _SECTION.finditer(text)]
    if not starts:
        return text
    kept = [text[:starts[0]]]
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        section = text[start:end]
        names = section_names(section)
        if names is not None and not any(excluded(n) for n in names):
            kept.append(section)
    return "".join(kept)


_STAT_LINE = re.compile(r"^ (\S.*?) +\| ", re.MULTILINE)


def stat_names(name: str) -> list[str]:
    """The paths one ``--stat`` line names: ``a => b`` and ``dir/{a => b}/c`` give both sides."""
    m = re.fullmatch(r"(.*)\{(.*) => (.*)\}(.*)", name)
    if m is not None:
        head, old, new, tail = m.groups()
        return [re.sub("//+", "/", head + side + tail).lstrip("/") for side in (old, new)]
    if " => " in name:
        return name.split(" => ", 1)
    return [unquote(name)]


def drop_stat_lines(text: str, excluded: Excluded) -> str:
    """``--stat`` text without the lines for excluded paths."""
    out: list[str] = []
    for line in text.split("\n"):
        m = _STAT_LINE.match(line)
        if m is not None and any(excluded(n) for n in stat_names(m.group(1))):
            continue
        out.append(line)
    return "\n".join(out)
