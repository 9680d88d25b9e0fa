"""Frozen ``glyph``: the MCP tool gateway (``glyph serve``, ``glyph init``, audit)."""

from _frozen import run

run("glyph.cli:main")
