"""``omen provider add|disable|list``: providers in the user's config, used by ``auto`` at once.

Adding a provider writes ``[providers.NAME]`` (comments and layout of the file kept, see
config_edit.py) and puts ``NAME/*`` in the intent buckets, next to the local entries for
a server on this machine and last for a cloud one, because a provider that no bucket
names is never chosen by ``auto``. A running OMEN is then asked to re-read its config
(``POST /v1/omen/reload`` with the owner's token), so the next request can use it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import config_edit, endpoint
from .config import Config, ConfigError, ProviderConfig, default_config_path, load_config
from .providers.base import is_loopback_url
from .providers.registry import provider_kinds
from .secrets import SecretStore
from .tokens import TokenBook

CHAT_SIDE_EXCLUDED = ("embed",)  # a chat server is not an embeddings model


def guess_kind(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if urlsplit(url).port == 11434:
        return "ollama"
    if host.endswith("anthropic.com"):
        return "anthropic"
    return "openai"


def _placement(config: Config, refs: tuple[str, ...], local: bool) -> int:
    """Where a new provider goes in a bucket: after the local entries (local), else last."""
    if not local:
        return len(refs)
    kinds = provider_kinds()
    is_local = [
        ref.split("/", 1)[0] in config.providers
        and kinds[config.providers[ref.split("/", 1)[0]].kind].runs_locally(config.providers[ref.split("/", 1)[0]])
        for ref in refs
    ]
    return max((i + 1 for i, flag in enumerate(is_local) if flag), default=len(refs))


def _intents(config: Config, wanted: str) -> list[str]:
    if wanted == "none":
        return []
    if wanted == "all":
        return [i for i in config.intents if i not in CHAT_SIDE_EXCLUDED]
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in config.intents]
    if unknown:
        raise ConfigError(f"unknown intent {unknown[0]!r} (configured: {', '.join(config.intents)})")
    return names


def add(path: Path, name: str, url: str, *, kind: str | None, keys: list[str], models: list[str], intents: str, discover: bool) -> Config:
    """Write the provider and its bucket entries; return the new config."""
    current = load_config(path if path.exists() else None)
    kind = kind or guess_kind(url)
    cls = provider_kinds().get(kind)
    if cls is None:
        raise ConfigError(f"--kind must be one of {', '.join(sorted(provider_kinds()))}")
    values: dict[str, Any] = {"kind": kind, "base_url": url.rstrip("/"), "enabled": True, "discover": discover}
    if models:
        values["models"] = models
    probe = ProviderConfig(name=name, kind=kind, base_url=values["base_url"])
    if not keys and cls.needs_key(probe):
        keys = [f"keyring:{name}"]
    if keys:
        values["key"] = keys
    local = cls.runs_locally(probe)
    edits = [config_edit.provider_table(name, values)]
    for intent in _intents(current, intents):
        refs = current.intents[intent]
        edits.append(config_edit.intent_ref(intent, f"{name}/*", refs, _placement(current, refs, local)))
    return config_edit.apply(path, *edits)


def notify_running(config: Config) -> str:
    """Ask a running OMEN (found by its endpoint file) to re-read the config; say what happened."""
    info = endpoint.read(endpoint.path_for(config.data_dir))
    if info is None:
        return "OMEN is not running: it will use the change when it starts"
    if info.stale is not None:
        return f"OMEN is not running ({info.stale}): it will use the change when it starts"
    why = endpoint.verify(info)
    if why is not None:  # never send the owner's token to a server that has not proved it is ours
        return f"the server at {info.url} is not verified as your OMEN ({why}); nothing was sent: restart OMEN to use the change"
    token = TokenBook(config.data_dir, SecretStore(config.data_dir)).owner_token
    req = urllib.request.Request(
        f"{info.url.rstrip('/')}/v1/omen/reload", method="POST", data=b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with endpoint.no_redirect_opener(info).open(req, timeout=10) as resp:
            json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = json.loads(err.read() or b"{}").get("error", {}).get("message", err.reason)
        return f"the running OMEN at {info.url} did not reload: {detail}"
    except OSError as exc:
        return f"could not reach the running OMEN at {info.url} ({exc}); restart it to use the change"
    return f"the running OMEN at {info.url} uses it now"


def command(args: argparse.Namespace) -> int:
    path = Path(args.config) if args.config else default_config_path()
    if args.action == "list":
        config = load_config(path if path.exists() else None)
        for name, pc in config.providers.items():
            where = [i for i, refs in config.intents.items() if any(r.split("/", 1)[0] == name for r in refs)]
            state = "enabled" if pc.enabled else "disabled"
            print(f"{name}: {pc.kind} {pc.base_url} ({state}; intents: {', '.join(where) or 'none, only by name'})")
        return 0
    if args.action == "disable":
        config = config_edit.set_provider_enabled(path, args.name, False)
        print(f"disabled {args.name} in {path}; {notify_running(config)}")
        return 0
    if not args.url:
        print("omen provider add: give the server's base URL, e.g. http://127.0.0.1:8080/v1", file=sys.stderr)
        return 2
    config = add(
        path, args.name, args.url, kind=args.kind, keys=args.key or [], models=args.model or [], intents=args.intents,
        discover=not args.no_discover,
    )  # fmt: skip
    pc = config.providers[args.name]
    placed = [i for i, refs in config.intents.items() if f"{args.name}/*" in refs]
    print(f"added {args.name} ({pc.kind}, {pc.base_url}) to {path}")
    print(f"  'auto' uses it for: {', '.join(placed) or 'nothing (--intents none): name its models explicitly'}")
    if pc.key and not is_loopback_url(pc.base_url):
        ref = pc.key[0]
        if ref.startswith("keyring:"):
            print(f"  its key: `omen key set {ref.split(':', 1)[1]}`")
    print(f"  {notify_running(config)}")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("provider", help="add, disable or list providers in your config (auto uses them at once)", parents=[common])
    p.add_argument("action", choices=["add", "disable", "list"])
    p.add_argument("name", nargs="?", default="", help="the provider's name (add, disable)")
    p.add_argument("url", nargs="?", help="its base URL (add), e.g. http://127.0.0.1:8080/v1 for a llama.cpp server")
    p.add_argument("--kind", help="openai (any OpenAI-compatible server), ollama or anthropic; guessed from the URL")
    p.add_argument("--key", action="append", help="where its key is: keyring:NAME or env:VARIABLE (repeatable)")
    p.add_argument("--model", action="append", help="a model it serves (repeatable); else discovered from the server")
    p.add_argument("--intents", default="all", help="intent buckets to join: all (default, not embed), none, or a,b,c")
    p.add_argument("--no-discover", action="store_true", help="do not ask the server for its models")
