"""``omen usage`` and ``omen quota``: the usage store and quotas from the command line.

Both read the data dir directly (SQLite in WAL mode lets them run beside a server), or
with ``[team]`` the team's PostgreSQL (every instance's usage).
``omen quota set`` writes ``quotas.json``, which a running server re-reads at its next
request.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from .. import jsonutil
from ..config import load_config
from . import rollup as r
from .books import QuotaBook, clear_quota, set_quota
from .ledger import QUOTA_KEYS, LocalLedger
from .meter import USAGE_DB
from .store import SqliteUsageStore


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    usage = sub.add_parser("usage", help="usage totals from the usage store, as a table", parents=[common])
    usage.add_argument("--from", dest="start", help="start: 2025-06-01, ISO time, 7d/24h ago, today, month (default: 30 days)")
    usage.add_argument("--to", dest="end", help="end (default: now)")
    usage.add_argument(
        "--group-by", default="provider,model", help="any of user,workspace,provider,model and day|hour (default: provider,model)"
    )
    usage.add_argument("--user")
    usage.add_argument("--workspace")
    usage.add_argument("--provider")
    usage.add_argument("--model")
    usage.add_argument("--json", action="store_true", help="print the /v1/usage JSON instead of a table")

    quota = sub.add_parser("quota", help="set, list or clear per-user and per-workspace quotas", parents=[common])
    quota.add_argument("action", choices=["set", "list", "clear"])
    who = quota.add_mutually_exclusive_group()
    who.add_argument("--user")
    who.add_argument("--workspace")
    for key in QUOTA_KEYS:
        quota.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="N|none", help=f"{key} ('none': no limit)")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _store(args: argparse.Namespace) -> SqliteUsageStore | None:
    config = load_config(args.config)
    if config.team is not None:  # the team's books (docs/team.md)
        from .pg_store import PgUsageStore

        team_store = PgUsageStore(config.team.database_url, config.team.instance, config.data_dir)
        team_store.open()
        return team_store
    path = config.data_dir / USAGE_DB
    if not path.exists():
        return None
    store = SqliteUsageStore(path)
    store.open()
    return store


def usage_command(args: argparse.Namespace) -> int:
    params = {
        k: v
        for k, v in {
            "from": args.start,
            "to": args.end,
            "group_by": args.group_by,
            "user": args.user,
            "workspace": args.workspace,
            "provider": args.provider,
            "model": args.model,
        }.items()
        if v
    }
    try:
        query = r.make_query(params, time.time())
    except r.QueryError as exc:
        print(f"omen usage: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    body = store.rollup(query) if store is not None else r.result(query, {})
    if args.json:
        sys.stdout.write(jsonutil.dumps(body).decode() + "\n")
        return 0
    keys = body["group_by"]
    metrics = ["requests", "attempts", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "avg_ms", "p95_ms"]

    def cells(row: dict[str, Any]) -> list[str]:
        values = [
            row["requests"], row["attempts"], row["errors"], row["prompt_tokens"], row["completion_tokens"],
            f"{row['cost_usd']:.6f}", row["latency_ms"]["avg"], row["latency_ms"]["p95"],
        ]  # fmt: skip
        return [_num(v) for v in values]

    rows = [[_num(row.get(k)) for k in keys] + cells(row) for row in body["data"]]
    rows.append(["TOTAL"] + [""] * (len(keys) - 1) + cells(body["total"]) if keys else cells(body["total"]))
    print(f"usage from {body['from']} to {body['to']} (UTC)" + (f", {body['filters']}" if body["filters"] else ""))
    print(_table([*keys, *metrics], rows, len(keys)))
    if store is None:
        print("(no usage recorded yet)")
    return 0


def _limit_value(raw: str, key: str) -> float | None:
    if raw == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0 or math.isinf(value) or (key.endswith("tokens") and value != int(value)):
        kind = "an integer" if key.endswith("tokens") else "a number"
        raise ValueError(f"--{key.replace('_', '-')} must be {kind} >= 0 or 'none'")
    return value


def quota_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    book = QuotaBook(config.quotas, config.data_dir)
    scope = ("user", args.user) if args.user else ("workspace", args.workspace) if args.workspace else None
    if args.action in ("set", "clear") and scope is None:
        print(f"omen quota {args.action}: name a --user or a --workspace", file=sys.stderr)
        return 2
    if args.action == "set":
        assert scope is not None
        try:
            values = {k: _limit_value(getattr(args, k), k) for k in QUOTA_KEYS if getattr(args, k) is not None}
        except ValueError as exc:
            print(f"omen quota set: {exc}", file=sys.stderr)
            return 2
        if not values:
            print("omen quota set: give at least one of --daily-usd --monthly-usd --daily-tokens --monthly-tokens", file=sys.stderr)
            return 2
        entry = set_quota(book.file, scope[0], scope[1], values)
        shown = ", ".join(f"{k}={'none' if v is None else f'{v:g}'}" for k, v in entry.items())
        print(f"quota for {scope[0]} {scope[1]}: {shown} (a running server applies it at its next request)")
        return 0
    if args.action == "clear":
        assert scope is not None
        found = clear_quota(book.file, scope[0], scope[1])
        print(f"cleared the quota set for {scope[0]} {scope[1]}" if found else f"no quota was set for {scope[0]} {scope[1]} with `omen quota set`")
        return 0
    return _quota_list(args, book)


def _quota_list(args: argparse.Namespace, book: QuotaBook) -> int:
    ledger = LocalLedger()
    store = _store(args)
    if store is not None:
        ledger.load(store.spend(int(r.month_start(time.time()) // r.DAY)))
    rows = []
    for kind in ("user", "workspace"):
        eff = book.effective((kind, "\x00default"))
        rows.append([kind, "(default)", *(_cell(eff.get(k), None) for k in QUOTA_KEYS), _sources(eff)])
    scopes = book.configured()
    if args.user or args.workspace:
        wanted = ("user", args.user) if args.user else ("workspace", args.workspace)
        scopes = [(wanted, book.effective(wanted))]
    for scope, eff in scopes:
        d_usd, m_usd, d_tok, m_tok = ledger.used(scope)
        used = dict(zip(QUOTA_KEYS, (d_usd, m_usd, d_tok, m_tok), strict=True))
        rows.append([scope[0], scope[1], *(_cell(eff.get(k), used[k]) for k in QUOTA_KEYS), _sources(eff)])
    print("quotas per UTC day and month; cells are used / limit ('-': no limit)")
    print(_table(["scope", "name", *QUOTA_KEYS, "set in"], rows, 2))
    return 0


def _cell(limit: tuple[float, str] | None, used: float | None) -> str:
    value = None if limit is None or math.isinf(limit[0]) else limit[0]
    shown = "-" if value is None else f"{value:g}"
    return shown if used is None else f"{used:.6g} / {shown}"


def _sources(eff: dict[str, tuple[float, str]]) -> str:
    return ", ".join(dict.fromkeys(src.rsplit(".", 1)[0] if src.startswith("quotas.") else src for _, src in eff.values())) or "-"
