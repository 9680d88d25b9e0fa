"""``glyph``: serve the gateway, read and verify the audit log, manage pins and decisions.

    glyph init [--config FILE] [--root DIR] [--force]
    glyph serve [--config FILE] [--http [--host H] [--port P] [--no-auth]] [--prompt auto|app|tty|dialog|deny]
    glyph audit [--config FILE] [--limit N] [--json] [--verify [--head ID:HASH]]
    glyph pins [--config FILE] [--approve SERVER__TOOL ...]
    glyph decisions [--config FILE] [--forget SERVER__TOOL ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import anyio

from glyph import __version__
from glyph.audit import AuditLog
from glyph.config import ConfigError, GlyphConfig, default_config_path, load_config
from glyph.consent import (
    NO_PROMPT_HTTP,
    NO_PROMPT_NO_APP,
    NO_PROMPT_OFF,
    NO_PROMPT_STDIO,
    DenyPrompter,
    Prompter,
    TerminalPrompter,
)
from glyph.db import Store
from glyph.decisions import DecisionMemory
from glyph.display import VisibleFormatter, json_visible, one_line
from glyph.downstream import SEP
from glyph.init import no_config_message, no_tools_message, write_starter
from glyph.pins import Pins
from rune.pipes import client_gone, discard_stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glyph", description="Glyph: MCP tool governance for OMEN Local")
    parser.add_argument("--version", action="version", version=f"glyph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write a commented starter config sharing this folder")
    init.add_argument("--config", type=Path, help="where to write it (default: glyph.toml in the config dir)")
    init.add_argument("--root", type=Path, default=Path.cwd(), help="the folder to share (default: this one)")
    init.add_argument("--force", action="store_true", help="replace an existing config")

    serve = sub.add_parser("serve", help="run the MCP gateway (stdio by default)")
    serve.add_argument("--config", type=Path, help="config file (TOML or JSON)")
    serve.add_argument("--http", action="store_true",
                       help="serve Streamable HTTP instead of stdio; clients need the bearer token in "
                            "<data_dir>/http-token (created on first use) or GLYPH_HTTP_TOKEN")
    serve.add_argument("--no-auth", action="store_true",
                       help="with --http on a loopback host only: no token (any local user or process can call tools)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8767)
    serve.add_argument("--prompt", choices=("auto", "app", "tty", "dialog", "deny"), default="auto",
                       help="who answers consent prompts (auto: the tray app when it runs, else this "
                            "console under --http, else deny; see docs/app.md)")
    serve.add_argument("--prompt-fallback", choices=("tty", "dialog", "deny"), default=None,
                       help="with auto/app: who answers when the tray app is not running")
    serve.add_argument("-v", "--verbose", action="store_true")

    audit = sub.add_parser("audit", help="show and verify the audit log")
    audit.add_argument("--config", type=Path)
    audit.add_argument("--limit", type=int, default=50, help="newest N entries (0: all)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 if broken")
    audit.add_argument("--head", help="ID:HASH recorded earlier, to detect truncation")

    pins = sub.add_parser("pins", help="list pinned tool definitions; approve changed ones")
    pins.add_argument("--config", type=Path)
    pins.add_argument("--approve", nargs="+", metavar="SERVER__TOOL", default=[])

    decisions = sub.add_parser("decisions", help="list remembered always/deny-always decisions")
    decisions.add_argument("--config", type=Path)
    decisions.add_argument("--forget", nargs="+", metavar="SERVER__TOOL", default=[])

    args = parser.parse_args(argv)
    if args.command == "init":
        return _init(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"glyph: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        if config.source is None:
            print(no_config_message(default_config_path()), file=sys.stderr, flush=True)
        elif not config.servers:
            print(no_tools_message(config.source), file=sys.stderr, flush=True)
        return _serve(config, args)
    with Store(config.db_path) as store:
        if args.command == "audit":
            return _audit(store, args, sys.stdout)
        if args.command == "pins":
            return _pins(store, args.approve, sys.stdout)
        return _decisions(store, args.forget, sys.stdout)


def _init(args: argparse.Namespace) -> int:
    path: Path = args.config or default_config_path()
    root: Path = args.root.expanduser().resolve()
    if not root.is_dir():
        print(f"glyph init: {root} is not a folder", file=sys.stderr)
        return 2
    try:
        write_starter(path, root, force=args.force)
    except FileExistsError:
        print(f"glyph init: {path} exists; keeping it (--force replaces it)", file=sys.stderr)
        return 1
    print(f"wrote {path}: root {root}, read-only tools allowed, writes asked, .env and *.pem refused")
    print("next: register `glyph serve` in your editor (docs/glyph.md); `glyph audit` shows what tools did")
    return 0


def choose_prompter(mode: str, http: bool, stdin: TextIO = sys.stdin, stderr: TextIO = sys.stderr,
                    fallback: str | None = None) -> Prompter:
    """Under stdio, stdin/stdout are the MCP pipe: only ``--prompt tty`` may use /dev/tty.
    ``auto`` and ``app`` ask the tray app first (glyph/app_prompter.py)."""
    if mode in ("auto", "app"):
        from glyph.app_prompter import AppPrompter

        local = fallback or ("local-auto" if mode == "auto" else "deny")
        if local == "deny":
            return AppPrompter(DenyPrompter(NO_PROMPT_NO_APP))
        return AppPrompter(choose_prompter(local, http, stdin, stderr))
    if mode == "dialog":
        from glyph.app_prompter import DialogPrompter

        return DialogPrompter()
    if mode == "tty":
        tty = TerminalPrompter.open_tty()
        if tty is not None:
            return tty
        logging.getLogger("glyph").warning("no terminal to prompt on; every prompt is denied")
    elif mode == "local-auto" and http and stdin.isatty():
        return TerminalPrompter(stdin, stderr)
    elif mode == "deny":
        return DenyPrompter(NO_PROMPT_OFF)
    return DenyPrompter(NO_PROMPT_HTTP if http else NO_PROMPT_STDIO)


def _serve(config: GlyphConfig, args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(VisibleFormatter("glyph %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    for noisy in ("mcp", "httpx", "httpx2", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token: str | None = None
    if args.http:
        try:
            token = http_token(config, args.host, args.no_auth, sys.stderr)
        except (ValueError, OSError) as exc:
            print(f"glyph: {exc}", file=sys.stderr, flush=True)
            return 2
    prompter = choose_prompter(args.prompt, args.http, fallback=args.prompt_fallback)

    async def run() -> None:
        from glyph.gateway import Gateway
        from glyph.server import serve_http, serve_stdio

        async with Gateway(config, prompter) as gateway:
            logging.getLogger("glyph").info("status %s; prompts: %s", json.dumps(gateway.status()), prompter.name)
            if args.http:
                await serve_http(gateway, args.host, args.port, token)
            else:
                await serve_stdio(gateway)

    try:
        anyio.run(run)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        if not client_gone(exc):
            raise
        discard_stdout()  # the client closed the pipe: a normal end, no traceback
    return 0


NO_AUTH_WARNING = """\
glyph WARNING: ==============================================================
glyph WARNING:  --no-auth: this Glyph answers ANY process of ANY user on this
glyph WARNING:  machine (loopback is shared). They can call its tools on {roots}.
glyph WARNING:  Drop --no-auth to require the token.
glyph WARNING: =============================================================="""


def http_token(config: GlyphConfig, host: str, no_auth: bool, err: TextIO) -> str | None:
    """The token `glyph serve --http` requires: GLYPH_HTTP_TOKEN, else the stored one (created once).

    ``--no-auth`` is only accepted on a loopback host, and said loudly; ValueError otherwise.
    """
    from glyph.http_auth import LOOPBACK, is_loopback, load_or_create, token_path

    if no_auth:
        if host not in LOOPBACK:
            raise ValueError(f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1), not {host}")
        print(NO_AUTH_WARNING.format(roots=", ".join(str(r) for r in config.roots) or "(no roots)"),
              file=err, flush=True)
        return None
    if not is_loopback(host):  # the bearer token would cross the network in clear
        raise ValueError(
            f"--host {host} is not a loopback address, and Glyph serves plain HTTP: the bearer token and "
            "every tool call would cross the network unencrypted. Serve on 127.0.0.1 and put a TLS "
            "reverse proxy in front of it for other machines (see docs/glyph.md, \"Beyond this machine\")")
    env = os.environ.get("GLYPH_HTTP_TOKEN")
    if env:
        return env
    path = token_path(config.data_dir)
    token, created = load_or_create(path)
    if created:
        print(f"glyph: created the HTTP token (shown only this once; stored in {path}, readable by you only).\n"
              f"glyph: clients send the header  Authorization: Bearer {token}", file=err, flush=True)
    else:
        print(f"glyph: HTTP clients need the bearer token stored in {path}", file=err, flush=True)
    return token


def _audit(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    log = AuditLog(store)
    if args.verify:
        head = None
        if args.head:
            head_id, _, head_hash = args.head.partition(":")
            head = (int(head_id), head_hash)
        report = log.verify(expect_head=head)
        if report.ok:
            print(f"OK: {report.count} entries, chain intact; head {report.head_id}:{report.head_hash}", file=out)
            return 0
        print(f"TAMPERED at row {report.bad_id}: {report.problem} "
              f"({report.count} entries verified before it)", file=out)
        return 1
    rows = log.rows(None if args.limit == 0 else args.limit)
    if args.json:
        for row in rows:
            print(json_visible(json.dumps(row, ensure_ascii=False)), file=out)
        return 0
    print(f"{'id':>5}  {'time (UTC)':19}  {'kind':6}  {'client':14}  {'tool':32}  {'decision':8}  "
          f"{'outcome':15}  {'ms':>7}  {'bytes':>7}  decided by", file=out)
    for r in rows:
        tool = f"{r['server']}{SEP}{r['tool']}" if r["server"] else r["tool"]
        print(one_line(f"{r['id']:>5}  {r['ts'][:19]:19}  {r['kind']:6}  {r['client'][:14]:14}  {tool[:32]:32}  "
                       f"{r['decision']:8}  {r['outcome'][:15]:15}  {r['duration_us'] / 1000:7.1f}  "
                       f"{r['result_bytes']:>7}  {r['decided_by']}"), file=out)
    return 0


def _split(name: str) -> tuple[str, str]:
    server, sep, tool = name.partition(SEP)
    if not sep or not tool:
        raise SystemExit(f"glyph: expected SERVER{SEP}TOOL, got {name!r}")
    return server, tool


def _pins(store: Store, approve: list[str], out: TextIO) -> int:
    pins = Pins(store)
    status = 0
    for name in approve:
        if pins.approve_pending(*_split(name)):
            print(f"approved the new definition of {name}", file=out)
        else:
            print(f"{name}: no changed definition waiting", file=out)
            status = 1
    for p in pins.listing():
        state = f"CHANGED (new sha256:{p['pending_hash'][:12]}, waiting)" if p["pending_hash"] else "ok"
        print(f"{p['server']}{SEP}{p['tool']}  sha256:{p['hash'][:12]}  pinned {p['ts'][:19]}  {state}", file=out)
    return status


def _decisions(store: Store, forget: list[str], out: TextIO) -> int:
    memory = DecisionMemory(store)
    for name in forget:
        n = memory.forget(*_split(name))
        print(f"forgot {n} decision(s) for {name}", file=out)
    for d in memory.persisted():
        print(f"{d['server']}{SEP}{d['tool']}  {d['scope']}  by {d['decided_by']}  {d['ts'][:19]}", file=out)
    return 0
