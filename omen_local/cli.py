"""The ``omen`` command: the tray app, serve headless, manage tokens and keys, show config.

``omen app`` (or ``omen`` alone, where there is a display) starts the tray app; the app's
package (and Qt) is imported only then, so ``omen serve`` never loads Qt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from pathlib import Path

import peewee

from . import __version__, gc_tuning, provider_cli
from .client import ask as ask_cli
from .config import ConfigError, TeamConfig, default_config_path, load_config
from .metering import MeteringError
from .metering import cli as metering_cli
from .secrets import SecretStore
from .tokens import TokenBook, reserved_user
from .visible import VisibleFormatter


def _setup_logging(level: str) -> None:
    """Upstream error text and request paths reach this log: control characters are shown, not obeyed."""
    handler = logging.StreamHandler()
    handler.setFormatter(VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


async def _serve(args: argparse.Namespace) -> int:
    from .service import OmenService

    overrides: dict[str, dict[str, object]] = {"server": {}}
    if args.host:
        overrides["server"]["host"] = args.host
    if args.port is not None:
        overrides["server"]["port"] = args.port
    config = load_config(args.config, overrides=overrides)
    if getattr(args, "team", False):  # the team's shared gateway (omen_local/gateway.py)
        from .gateway import refusal

        if (why := refusal(config)) is not None:
            print(f"omen serve --team: {why}", file=sys.stderr)
            return 2
    service = OmenService(config, team_gateway=bool(getattr(args, "team", False)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except MeteringError as exc:
        print(f"omen: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"omen: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}", file=sys.stderr)
        return 1
    gc_tuning.settle()  # start-up's objects out of the collector's walks (gc_tuning.py)
    print(f"OMEN {__version__} serving the OpenAI API at {service.url}/v1", flush=True)
    print(f"  token: run `omen token` (secrets: {service.secrets.backend})", flush=True)
    if service.tls is not None:
        print(f"  beyond loopback: TLS only, client tokens only; certificate {service.tls.cert}", flush=True)
        print(f"  its fingerprint (compare it on the client): {service.tls.fingerprint}", flush=True)
    if getattr(args, "team", False):
        print("  team gateway: teammates' laptops use kind = \"omen-gateway\" with a client token from "
              "`omen token create --user NAME` here (docs/team.md)", flush=True)
    for report in service.probe_report():
        print(f"  provider {report.provider}: {report.state} ({report.detail})", flush=True)
    ready = [r.provider for r in service.probe_report() if r.state in ("up", "not probed")]
    if not ready:
        print("  nothing can answer yet: start Ollama or set a key (`omen key set NAME`); `omen doctor` explains", flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


def _stores(args: argparse.Namespace) -> tuple[SecretStore, Path]:
    config = load_config(args.config)
    return SecretStore(config.data_dir), config.data_dir


def _team_db(team: TeamConfig, data_dir: Path) -> peewee.Database:
    """The team's PostgreSQL, its schema brought up to date (the token table is migration 3)."""
    from .metering.pg_store import PgUsageStore

    store = PgUsageStore(team.database_url, team.instance, data_dir)
    store.open()
    return store.db


def _token(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store, data_dir = SecretStore(config.data_dir), config.data_dir
    book = TokenBook(data_dir, store)
    action = args.action or "show"
    team_cfg = None if getattr(args, "local", False) else config.team
    team = team_cfg is not None
    if action == "show":
        print(book.owner_token)
        return 0
    if action in ("create", "revoke") and not args.user:
        print(f"omen token {action}: " + ("--user is required" if action == "create" else
              "name a user or token prefix with --user"), file=sys.stderr)  # fmt: skip
        return 2
    if action == "create" and reserved_user(args.user):
        print(f"omen token create: the user name {args.user.strip()!r} is reserved (the owner's token and the "
              "endpoint file's use it); choose another", file=sys.stderr)
        return 2
    role = getattr(args, "role", None)
    if not team or action == "list":
        if action == "create":
            print(book.create(args.user, args.workspace, args.label, role))
        elif action == "list":
            for entry in book.list():
                print("  ".join(f"{k}={v}" for k, v in entry.items() if v))
        else:
            print(f"revoked {book.revoke(args.user)} token(s)")
        if not team:
            return 0
    from . import team_tokens

    assert team_cfg is not None
    local = book.revoke(args.user) if action == "revoke" else 0  # this instance's, whatever PostgreSQL says
    admin_url = getattr(args, "admin_url", None) or os.environ.get(team_tokens.ADMIN_URL_ENV) or None
    try:
        # Writing the book takes the team admin's role; instances' role reads it only (docs/team.md).
        db = team_tokens.admin_db(admin_url) if admin_url and action != "list" else _team_db(team_cfg, data_dir)
        with db.connection_context():
            if action == "create":
                print(team_tokens.create(db, args.user, args.workspace, args.label, role, by=team_cfg.instance))
            elif action == "list":
                for entry in team_tokens.listing(db):
                    print("  ".join(f"{k}={v}" for k, v in entry.items() if v))
            else:
                shared = team_tokens.revoke(db, args.user, by=team_cfg.instance)
                print(f"revoked {local + shared} token(s) ({shared} team, {local} local); every instance refuses "
                      "them within seconds")
    except Exception as exc:  # the team's database cannot be reached, or refused the change
        if not team_tokens.insufficient_privilege(exc):
            return _book_unreachable(action, local, exc)
        print(f"omen token {action}: this role may not write the team's token book ({exc}".rstrip() + ");\n"
              f"  fix: run it with --admin-url postgresql://<team admin>@… (or set {team_tokens.ADMIN_URL_ENV}); "
              "instances' own database role only reads the book (docs/team.md, \"Team tokens\")", file=sys.stderr)
        if action == "revoke":
            print(f"  revoked {local} local token(s)", file=sys.stderr)
        return 1
    return 0


def _book_unreachable(action: str, local: int, exc: BaseException) -> int:
    hint = {"create": "\n  --local makes a token for this instance alone",
            "revoke": f"\n  revoked {local} local token(s); run it again for the team's when PostgreSQL answers"}
    print(f"omen token {action}: the team's token book (PostgreSQL) cannot be reached: {exc}"
          + hint.get(action, ""), file=sys.stderr)  # fmt: skip
    return 1


def _key(args: argparse.Namespace) -> int:
    store, _ = _stores(args)
    if args.action == "set":
        value = getpass.getpass(f"API key for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
        if not value:
            print("omen key set: empty key, nothing stored", file=sys.stderr)
            return 2
        store.set(args.name, value)
        print(f"stored the key for {args.name} in {store.backend}")
        print(provider_cli.notify_running(load_config(args.config)))
    else:
        print("set" if store.get(args.name) else "not set")
    return 0


def _config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"config file: {config.source or '(none; shipped defaults) would be ' + str(default_config_path())}")
    print(f"data dir:    {config.data_dir}")
    print(f"listen:      {config.server.host}:{config.server.port}")
    for name, pc in config.providers.items():
        print(f"provider {name}: kind={pc.kind} base_url={pc.base_url} enabled={pc.enabled}")
    return 0


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _app(args: argparse.Namespace) -> int:
    try:
        from app.main import main as app_main  # lazy: Qt loads only for the app
    except ImportError as exc:
        print(f"omen app: the desktop app is not installed ({exc}); pip install 'omen-local[app]'", file=sys.stderr)
        return 1
    argv: list[str] = []
    if args.config:
        argv += ["--config", str(args.config)]
    for flag in ("minimized", "no_tray", "no_glyph"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    argv += ["--log-level", getattr(args, "log_level", "info")]
    return app_main(argv)
def _doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    config = load_config(args.config)
    report = asyncio.run(
        run_doctor(config, SecretStore(config.data_dir), glyph_config=args.glyph_config, timeout_s=args.timeout)
    )
    print(report.text())
    return report.exit_code


def build_parser() -> argparse.ArgumentParser:
    # --config and --log-level work before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="config file (default: $OMEN_CONFIG or the platform config dir)"
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])
    parser = argparse.ArgumentParser(
        prog="omen", description="OMEN Local: a local-first LLM router and meter.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"omen {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the router headless", parents=[common])
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8765; 0 picks a free one)")
    serve.add_argument("--team", action="store_true",
                       help="the team's shared gateway: [team] books, TLS and client tokens required (docs/team.md)")

    token = sub.add_parser(
        "token", help="print the owner's token, or create/list/revoke client tokens", parents=[common]
    )
    token.add_argument("action", nargs="?", choices=["show", "create", "list", "revoke"])
    token.add_argument("--user", help="the user a new token names (create), or user/prefix to revoke")
    token.add_argument("--workspace", help="default workspace for a new token")
    token.add_argument("--label", help="a note to recognise the token by (e.g. the client)")
    token.add_argument("--role", choices=["team-admin"], help="team-admin: reads every user's usage (docs/team.md)")
    token.add_argument("--admin-url", metavar="URL",
                       help="with [team], create/revoke: the team admin's PostgreSQL URL, the role that may write the "
                            "token book (default: $OMEN_TEAM_ADMIN_URL; never kept in a config file)")
    token.add_argument("--local", action="store_true",
                       help="with [team]: a token for this instance alone (tokens.json), not the team's book")

    key = sub.add_parser(
        "key", help="store a provider API key in the keyring (read from the terminal or stdin)", parents=[common]
    )
    key.add_argument("action", choices=["set", "check"])
    key.add_argument("name", help="the key name a provider's config refers to, e.g. openai for keyring:openai")

    sub.add_parser("config", help="show where the config and data live", parents=[common])
    app = sub.add_parser("app", help="run OMEN in the system tray (the desktop app)", parents=[common])
    app.add_argument("--minimized", action="store_true", help="start in the tray, dashboard closed")
    app.add_argument("--no-tray", action="store_true", help="run as a normal window")
    app.add_argument("--no-glyph", action="store_true", help="do not host Glyph")
    doctor = sub.add_parser(
        "doctor", help="check keyring, providers, intents, port, data dir and Glyph; say how to fix", parents=[common]
    )
    doctor.add_argument("--timeout", type=float, default=3.0, help="seconds for each network check (default 3)")
    doctor.add_argument("--glyph-config", type=Path, help="Glyph's config (default: glyph.toml in the config dir)")
    logs = sub.add_parser("logs", help="print the request log (one line per request); -f follows it", parents=[common])
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl+C stops)")
    logs.add_argument("-n", "--lines", type=int, default=20, help="how many of the last lines to print first (default 20)")
    metering_cli.add_parsers(sub, common)
    ask_cli.add_parser(sub, common)
    provider_cli.add_parser(sub, common)
    return parser


def _logs(args: argparse.Namespace) -> int:
    """``omen logs [-f]``: the request log (omen_local/requestlog.py), followed across rotations."""
    from .requestlog import FILE_NAME, follow, log_dir

    path = log_dir() / FILE_NAME
    if not path.exists() and not args.follow:
        print(f"omen logs: no request log yet at {path} (it starts with `omen serve`)", file=sys.stderr)
        return 1
    try:
        for line in follow(path, lines=max(0, args.lines), forever=args.follow):
            print(line, flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None)
    _setup_logging(getattr(args, "log_level", "info"))
    handlers = {
        "serve": _run_serve,
        "token": _token,
        "key": _key,
        "config": _config,
        "app": _app,
        "doctor": _doctor,
        "logs": _logs,
        "usage": metering_cli.usage_command,
        "quota": metering_cli.quota_command,
        "ask": ask_cli.main,
        "provider": provider_cli.command,
    }
    if args.command is None:
        if _has_display():
            return _app(args)
        print("No display here: running the router headless, as `omen serve` does (Ctrl+C stops it).", flush=True)
        args.host, args.port = None, None
        return _run_serve(args)
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"omen: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
