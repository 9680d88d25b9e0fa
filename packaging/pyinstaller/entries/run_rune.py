"""Frozen ``rune``: file, grep and git tools over MCP."""

from _frozen import run

run("rune.server:main")
