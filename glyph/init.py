"""``glyph init``: a commented starter config, so a first ``glyph serve`` has tools to offer.

The starter shares one folder (the current directory unless told otherwise) through Rune,
lets read-only tools run inside it unasked, asks before anything writes, and refuses
paths that usually hold secrets. Every line says what it does; docs/glyph.md has the rest.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

from glyph.private import private_dir

STARTER = """\
# Glyph: the tool gateway of OMEN Local. Written by `glyph init` on {today}.
# Editors call tools through Glyph; Glyph asks you before anything changes your files and
# writes every call to an audit log (`glyph audit`). Reference: docs/glyph.md.

# The folders the tools may use. Relative paths are relative to this file; add more with
# roots = ["~/code/app", "~/notes"]. Rune (files, grep, git) serves them.
roots = [{root}]

[consent]
auto_allow_read_only = true   # read-only tools (read, list, grep, git status/log/diff) run unasked inside the roots
prompt_timeout_s = 120        # an unanswered question is a "no"
deny_outside_roots = true     # a path outside every root is refused

# Rules are checked as a set: deny beats ask beats allow. Anything not allowed here or
# by auto_allow_read_only is asked (writes, edits, moves, deletes, git commits).
[[rules]]                     # files that usually hold secrets are never handed out
tool = "*"
path = "**/.env"
action = "deny"

[[rules]]
tool = "*"
path = "**/*.pem"
action = "deny"

# [[rules]]                   # example: let Rune edit files under src/ without asking
# server = "rune"
# tool = "edit_file"
# path = "src/**"
# action = "allow"

[rune]
enabled = true                # Rune needs at least one root
in_process = false            # true: run Rune inside Glyph instead of as a subprocess

# Other MCP servers go here, in the shape editors use (paste an mcpServers block):
# [mcpServers.github]
# command = "npx"
# args = ["-y", "@modelcontextprotocol/server-github"]
# env = {{ GITHUB_PERSONAL_ACCESS_TOKEN = "${{env:GITHUB_TOKEN}}" }}
# local_paths = false
"""


def starter_config(root: Path, today: date | None = None) -> str:
    """The starter text for ``root`` (a TOML string: JSON's escaping is valid TOML)."""
    return STARTER.format(root=json.dumps(str(root)), today=(today or date.today()).isoformat())


def write_starter(path: Path, root: Path, *, force: bool = False) -> Path:
    """Write the starter config to ``path``; an existing file is kept unless ``force``."""
    if path.exists() and not force:
        raise FileExistsError(path)
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(starter_config(root.resolve()))
    os.replace(tmp, path)
    return path


def no_config_message(path: Path) -> str:
    """What ``glyph serve`` says when it finds no config: where it looked, how to start."""
    return (
        f"glyph: no config at {path} (the default; --config FILE names another), so Glyph has no roots "
        "and serves no tools.\n"
        f"glyph: to start, run `glyph init` in the folder you want to share: it writes {path}, commented, "
        "with that folder as root, read-only tools allowed and writes asked."
    )


def no_tools_message(path: Path) -> str:
    return (
        f"glyph: {path} names no roots and no mcpServers, so Glyph serves no tools; add roots = [\"DIR\"] "
        "to it (or run `glyph init --force` in the folder to share)."
    )
