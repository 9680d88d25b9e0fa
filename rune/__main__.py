"""`python -m rune --root DIR [--http PORT]`: serve Rune over MCP."""

from __future__ import annotations

from rune.server import main

raise SystemExit(main())
