"""Where OMEN and local Ollama are, without configuration; what OMEN's aliases mean.

OMEN: ``OMEN_BASE_URL`` / ``OMEN_TOKEN`` (or arguments), else the endpoint file a running
OMEN publishes in its data dir (``omen_local.endpoint``). A stale file (its server is gone)
yields no target at all: its token is never sent to whatever listens on that port now. A
target from the file carries it (``Target.endpoint``): the client asks the server to prove
it holds the file's secret before the token goes (``endpoint.check_hello``). ``OMEN_TOKEN``
with no file and no URL goes to the default port only if its socket is the user's own
(``local_trust``). A URL the user gave (``OMEN_BASE_URL``, ``base_url``) is their choice.
Ollama: the first enabled Ollama provider in OMEN's config (the same file OMEN reads), so
degraded mode talks to the Ollama that OMEN would have used, and knows what an alias stands
for (its intent picks the local model; its other hints are reported as not honoured).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .. import endpoint, local_trust
from ..config import APP_NAME, Config, ConfigError, load_config
from .hints import Hints

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_OLLAMA = "http://127.0.0.1:11434"


@dataclass(frozen=True, slots=True)
class Target:
    """OMEN to talk to, or ``url=None`` with ``problem`` saying why there is none."""

    url: str | None
    token: str | None
    source: str
    problem: str | None = None
    pid: int | None = None  # from the endpoint file: a new pid means a new server to try at once
    endpoint_info: endpoint.EndpointInfo | None = None  # the server must prove it wrote this before a token goes


@dataclass(frozen=True, slots=True)
class Local:
    """What OMEN's config says about local providers (for degraded mode)."""

    data_dir: Path
    ollama_url: str
    local_providers: tuple[str, ...]  # provider names of kind ollama: "ollama/x" maps to x
    aliases: Mapping[str, Hints] = field(default_factory=dict)  # what each alias stands for
    trust_owner: str | None = None  # the Ollama provider's trust_owner (local_trust.py)


def _aliases(cfg: Config, local: tuple[str, ...]) -> dict[str, Hints]:
    return {
        name: Hints(strategy=None if a.strategy is None else str(a.strategy), k=a.k, intent=a.intent, budget_usd=a.budget_usd,
                    max_latency_ms=a.max_latency_ms, providers=local if a.local_only else a.providers)
        for name, a in cfg.aliases.items()
    }


def root_url(url: str) -> str:
    """``http://host:port`` from a base URL that may end in ``/v1`` (the SDKs' habit)."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1").rstrip("/")


def read_local(config: Path | str | None = None) -> Local:
    """Data dir and Ollama from OMEN's config; its defaults where the config cannot be read."""
    try:
        cfg = load_config(config)
    except (ConfigError, OSError):
        return Local(Path(platformdirs.user_data_dir(APP_NAME)), DEFAULT_OLLAMA, ("ollama",))
    ollamas = [(n, p.base_url) for n, p in cfg.providers.items() if p.kind == "ollama" and p.enabled]
    url = ollamas[0][1] if ollamas else DEFAULT_OLLAMA
    names = tuple(n for n, _ in ollamas) or ("ollama",)
    trust = cfg.providers[ollamas[0][0]].trust_owner if ollamas else None
    return Local(cfg.data_dir, url, names, _aliases(cfg, names), trust)


def find_omen(local: Local, *, base_url: str | None = None, token: str | None = None,
              environ: Mapping[str, str] = os.environ) -> Target:
    url = base_url or environ.get("OMEN_BASE_URL") or None
    tok = token or environ.get("OMEN_TOKEN") or None
    path = endpoint.path_for(local.data_dir)
    info = endpoint.read(path)
    if url is not None:
        url = root_url(url)
        source = "OMEN_BASE_URL" if base_url is None else "base_url argument"
        if tok is None and info is not None and info.stale is None and info.url == url:
            # the file's token only ever goes to the server that wrote it, once it proves so
            return Target(url, info.token, source, pid=info.pid, endpoint_info=info)
        return Target(url, tok, source)
    if info is None:
        if tok is not None:
            why = local_trust.own_listener(DEFAULT_URL)
            if why is not None:  # an unverified server on the default port gets no token
                return Target(None, None, "OMEN_TOKEN and the default URL",
                              problem=f"OMEN is not running (no endpoint file {path}; {why}; "
                                      "set OMEN_BASE_URL to send the token elsewhere)")
            return Target(DEFAULT_URL, tok, "OMEN_TOKEN and the default URL")
        return Target(None, None, str(path), problem=f"OMEN is not running (no endpoint file {path})")
    if info.stale is not None:
        return Target(None, None, str(path), problem=f"OMEN is not running ({info.stale}; stale endpoint file {path})",
                      pid=info.pid)
    return Target(info.url, tok or info.token, f"endpoint file {path}", pid=info.pid, endpoint_info=info)
