"""Glyph as an agent CLI's MCP server over stdio: a project folder, a glyph.toml, the command.

The policy is the one the tests check through every CLI: Rune's ``read_*`` tools allowed by a
rule, ``write_*`` denied by a rule (no prompt is involved, so no one has to be asked).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

NOTE = "hello from the note\n"


@dataclass(frozen=True)
class GlyphProject:
    root: Path  # the project folder, Glyph's only root
    config: Path  # glyph.toml

    @property
    def command(self) -> str:
        return sys.executable

    @property
    def args(self) -> list[str]:
        return ["-m", "glyph", "serve", "--config", str(self.config)]

    @property
    def note(self) -> Path:
        return self.root / "note.txt"


def glyph_project(tmp: Path) -> GlyphProject:
    root = tmp / "project"
    root.mkdir(parents=True, exist_ok=True)
    (root / "note.txt").write_text(NOTE, encoding="utf-8")
    config = tmp / "glyph.toml"
    config.write_text(
        f"""roots = ["{root}"]
data_dir = "{tmp / 'glyph-data'}"

[[rules]]
server = "rune"
tool = "read_*"
action = "allow"

[[rules]]
server = "rune"
tool = "write_*"
action = "deny"
""",
        encoding="utf-8",
    )
    return GlyphProject(root, config)
