"""``python -m glyph``: the same as the ``glyph`` console script."""

from __future__ import annotations

from glyph.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
