"""Rune: fast local execution (files, grep, git) for the roots it is handed, with zero policy.

    from rune import Rune
    async with Rune(["/path/to/project"]) as rune:
        specs = rune.tools                               # ToolSpec: schemas + annotations
        result = await rune.call("grep", {"pattern": "TODO"})

Also an MCP server: `python -m rune --root DIR [--http PORT]`.
"""

from __future__ import annotations

from rune.api import Rune
from rune.errors import ErrorCode, RuneError
from rune.git import LFS_FILTERS
from rune.spec import ToolAnnotations, ToolSpec

__version__ = "0.1.0"
__all__ = ["LFS_FILTERS", "ErrorCode", "Rune", "RuneError", "ToolAnnotations", "ToolSpec", "__version__"]
