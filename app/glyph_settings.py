"""Glyph's roots and consent rules, written to glyph.toml with tomlkit (comments survive)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomlkit

from glyph.config import ACTIONS, ConfigError, load_config
from glyph.private import private_dir


def save(path: Path, roots: list[str], rules: list[dict[str, str]]) -> None:
    """Replace ``roots`` and ``rules`` in Glyph's config file; validate before writing."""
    for i, rule in enumerate(rules, 1):
        if rule.get("action") not in ACTIONS:
            raise ConfigError(f"rules[{i}].action must be one of {', '.join(ACTIONS)}")
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        doc = tomlkit.document()
    roots_array = tomlkit.array()
    roots_array.extend(roots)
    roots_array.multiline(len(roots) > 1)
    doc["roots"] = roots_array
    if rules:
        aot = tomlkit.aot()
        for rule in rules:
            table = tomlkit.table()
            for key in ("action", "server", "tool", "path"):
                value: Any = rule.get(key)
                if value:
                    table[key] = value
            aot.append(table)
        doc["rules"] = aot
    elif "rules" in doc:
        del doc["rules"]
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(tomlkit.dumps(doc))
    try:
        load_config(tmp)  # the same checks Glyph makes at start
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
