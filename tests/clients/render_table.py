"""Render docs/clients.md's compatibility table from what the real-client tests recorded.

    .venv/bin/python -m pytest tests/clients -p no:cacheprovider    # writes tests/clients/results.jsonl
    .venv/bin/python -m tests.clients.render_table                  # rewrites the table in docs/clients.md

Each row is one client at the version the tests ran; a cell is "yes" when every recorded
check of that kind passed, "NO" when one failed, "-" when none ran. Rows of clients that
this run did not exercise are kept as they were, so each client's tests can refresh their
own rows. Only the lines between the markers are rewritten.
"""

from __future__ import annotations

import json
import sys

from .harness import RESULTS, ROOT

DOC = ROOT / "docs" / "clients.md"
START = "<!-- compat-table:start (tests/clients/render_table.py) -->"
END = "<!-- compat-table:end -->"
COLUMNS = ("text", "stream", "tools", "MCP", "failover", "default model", "compaction")
NAMES = {"claude": "Claude Code", "codex": "Codex CLI", "qwen": "Qwen Code", "cn": "Continue CLI", "llm": "llm", "aider": "aider"}
HEADER = "| client | version | door | " + " | ".join(COLUMNS) + " |"


def column_of(feature: str) -> tuple[str, ...]:
    """Which columns a recorded feature counts for (``text+stream (openai)`` -> text and stream)."""
    name = feature.split(" (")[0]
    return {
        "text+stream": ("text", "stream"),
        "text": ("text",),
        "stream": ("stream",),
        "tools": ("tools",),
        "MCP": ("MCP",),
        "failover": ("failover",),
        "default model": ("default model",),
        "compaction": ("compaction",),
    }.get(name, ())


def cell(oks: list[bool], kinds: set[str]) -> str:
    if not oks:
        return "-"
    if not all(oks):
        return "NO"
    return "yes" + (f" ({', '.join(sorted(kinds))})" if kinds else "")


def rows_from(results: list[dict[str, object]]) -> dict[tuple[str, str], str]:
    """(client, door) -> its table row."""
    grouped: dict[tuple[str, str, str], dict[str, tuple[list[bool], set[str]]]] = {}
    for r in results:
        key = (str(r["client"]), str(r["version"]), str(r["door"]))
        cols = grouped.setdefault(key, {c: ([], set()) for c in COLUMNS})
        feature = str(r["feature"])
        kind = feature.split(" (", 1)[1].rstrip(")") if " (" in feature else ""
        for col in column_of(feature):
            cols[col][0].append(bool(r["ok"]))
            if kind and col in ("text", "stream", "tools"):
                cols[col][1].add(kind)
    out: dict[tuple[str, str], str] = {}
    for (client, version, door), cols in grouped.items():
        cells = " | ".join(cell(*cols[c]) for c in COLUMNS)
        name = NAMES.get(client, client)
        out[(name, door)] = f"| {name} | {version} | `{door}` | {cells} |"
    return out


def render(doc: str, results: list[dict[str, object]]) -> str:
    head, sep, rest = doc.partition(START)
    if not sep:
        raise SystemExit(f"{DOC}: no {START!r} marker")
    old, sep2, tail = rest.partition(END)
    if not sep2:
        raise SystemExit(f"{DOC}: no {END!r} marker")
    rows: dict[tuple[str, str], str] = {}
    for line in old.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 3 and cells[0] not in ("client", "---"):
            rows[(cells[0], cells[2].strip("`"))] = line
    rows.update(rows_from(results))
    table = [HEADER, "| " + " | ".join(["---"] * (3 + len(COLUMNS))) + " |", *(rows[k] for k in sorted(rows))]
    return head + START + "\n" + "\n".join(table) + "\n" + END + tail


def main() -> int:
    if not RESULTS.exists():
        print(f"no {RESULTS}: run the client tests first", file=sys.stderr)
        return 1
    results = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    DOC.write_text(render(DOC.read_text(encoding="utf-8"), results), encoding="utf-8")
    print(f"rewrote the table in {DOC} from {len(results)} results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
