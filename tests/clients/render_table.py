"""Render tests/clients/results.jsonl (what the real-client tests observed) as docs/clients.md's
compatibility table: ``python -m tests.clients.render_table [--write]``.

One row per client and version; a column per feature the tests check. A cell is "yes" when
every run of that feature passed, "no" when any failed, blank when none ran. ``--write``
replaces the text between the table markers in docs/clients.md; without it the table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "clients.md"
START, END = "<!-- compatibility-table:start -->", "<!-- compatibility-table:end -->"
NAMES = {"claude": "Claude Code (`claude -p`)", "codex": "Codex CLI (`codex exec`)", "qwen": "Qwen Code (`qwen -p`)", "cn": "Continue CLI (`cn -p`)"}
COLUMNS = [
    ("text+stream", "text, streamed"),
    ("tools:openai", "tools via OpenAI-compatible"),
    ("tools:anthropic", "tools via Anthropic"),
    ("tools:ollama", "tools via Ollama"),
    ("mcp", "Glyph (MCP, stdio)"),
    ("failover", "failover"),
    ("default-model", "its default model"),
]


def table(rows: list[dict[str, object]]) -> str:
    seen: dict[tuple[str, str, str], dict[str, bool]] = {}
    for row in rows:
        key = (str(row["client"]), str(row["version"]), str(row["door"]))
        cells = seen.setdefault(key, {})
        feature = str(row["feature"])
        cells[feature] = cells.get(feature, True) and bool(row["ok"])
    head = "| client | version | door | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (3 + len(COLUMNS))]
    for (client, version, door), cells in sorted(seen.items()):
        marks = ["" if f not in cells else ("yes" if cells[f] else "**no**") for f, _ in COLUMNS]
        lines.append(f"| {NAMES.get(client, client)} | {version} | `{door}` | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC}")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    rendered = table(rows)
    if not args.write:
        sys.stdout.write(rendered)
        return 0
    doc = DOC.read_text(encoding="utf-8")
    before, rest = doc.split(START, 1)
    _, after = rest.split(END, 1)
    DOC.write_text(f"{before}{START}\n{rendered}{END}{after}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
