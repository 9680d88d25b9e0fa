"""The tool registry: every Rune tool, in the order they are listed."""

from __future__ import annotations

from rune import fs, git, grep
from rune.spec import ToolSpec

TOOLS: tuple[ToolSpec, ...] = (*fs.TOOLS, *grep.TOOLS, *git.TOOLS)
BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
