"""Glyph: tool governance for MCP.

Glyph is an MCP server that fronts Rune and any other MCP servers. It decides whether a
tool call may run (policy, consent), validates it against the tool's schemas, pins each
tool's definition, and records every call in a tamper-evident audit log. It never routes
models and never imports ``omen_local``.
"""

from __future__ import annotations

__version__ = "0.1.0"
