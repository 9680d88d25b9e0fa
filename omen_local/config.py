"""Configuration: one TOML file, deep-merged over the shipped defaults.

A user's file only states what differs from ``resources/default_config.toml``; the
pricing table (``resources/pricing.toml``) supplies prices for models that do not
carry their own. Loading is pure apart from reading the files, and every mistake is
reported as a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from .provider_config import DIALECT_NAMES, FREE, KINDS
from .provider_config import ModelSpec as ModelSpec  # re-exported: the config's types
from .provider_config import Price as Price
from .provider_config import ProviderConfig as ProviderConfig

APP_NAME = "omen-local"


class StrategyName(StrEnum):
    SINGLE = "single"
    RACE = "race"
    SPECULATE_K = "speculate_k"
    PARALLEL_MERGE = "parallel_merge"


STRATEGIES = tuple(s.value for s in StrategyName)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_body_bytes: int = 20 * 1024 * 1024
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    tls_cert: str | None = None  # beyond loopback: your certificate (PEM), else a self-signed one
    tls_key: str | None = None
    request_log: bool = True  # one line per request in the log dir (omen_local/requestlog.py)


@dataclass(frozen=True, slots=True)
class Alias:
    """A model name that stands for a set of hints (``auto-code``, ``auto-fast``...), for
    clients that can only type a model name. The request's own hints override it."""

    name: str
    description: str = ""
    intent: str | None = None
    strategy: StrategyName | None = None
    k: int | None = None
    providers: tuple[str, ...] | None = None
    local_only: bool = False
    budget_usd: float | None = None
    max_latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    strategy: StrategyName = StrategyName.SINGLE
    intent: str = "chat"
    k: int = 2
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 120.0
    idle_timeout_s: float = 120.0
    request_timeout_s: float = 900.0
    budget_usd: float | None = None
    health_interval_s: float = 15.0
    failure_cooldown_s: float = 10.0
    assumed_output_tokens: int = 4096
    guess_intent: bool = True
    stickiness: str = "none"
    sticky_ttl_s: float = 3600.0
    breaker_failures: int = 3
    speculation_window_ms: int = 2000
    merge_wait_ms: int = 60000
    merge_model: str = ""


UNLIMITED = float("inf")  # "none" in the config or `omen quota set`: no limit, even over a default


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Spend allowed per UTC day / month; None inherits (from the default), inf is unlimited."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    daily_tokens: float | None = None
    monthly_tokens: float | None = None


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests and tokens per sliding minute; None inherits, inf is unlimited."""

    rpm: float | None = None
    tpm: float | None = None


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    default_user: QuotaLimits = QuotaLimits()
    default_workspace: QuotaLimits = QuotaLimits()
    users: dict[str, QuotaLimits] = field(default_factory=dict)
    workspaces: dict[str, QuotaLimits] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LimitConfig:
    default_user: RateLimits = RateLimits()
    default_workspace: RateLimits = RateLimits()
    users: dict[str, RateLimits] = field(default_factory=dict)
    workspaces: dict[str, RateLimits] = field(default_factory=dict)
    providers: dict[str, RateLimits] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """Look for model servers already running on this machine (LM Studio, llama.cpp, vLLM)."""

    local: bool = True
    extra: tuple[str, ...] = ()  # more OpenAI-compatible base URLs to probe (non-loopback ones only here)


@dataclass(frozen=True, slots=True)
class TeamConfig:
    """A team deployment (docs/team.md): usage in PostgreSQL, quotas and rate limits in Redis.

    ``database_url`` and ``redis_url`` may hold passwords: they are never logged or shown.
    """

    database_url: str
    redis_url: str | None
    instance: str  # this OMEN's name in the team's books (default user@host)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    defaults: Defaults
    providers: dict[str, ProviderConfig]
    intents: dict[str, tuple[str, ...]]
    pricing: dict[str, Price]
    data_dir: Path
    config_dir: Path
    source: Path | None = None
    quotas: QuotaConfig = QuotaConfig()
    limits: LimitConfig = LimitConfig()
    aliases: dict[str, Alias] = field(default_factory=dict)
    discovery: DiscoveryConfig = DiscoveryConfig()
    # [aliases] "pattern" = "target": model names clients insist on (claude-*, gpt-5*-codex),
    # most specific pattern first (api/model_map.py).
    model_map: tuple[tuple[str, str], ...] = ()
    team: TeamConfig | None = None  # None: one machine, SQLite

    def price_for(self, provider: str, model: str) -> Price:
        """The price of ``model`` as served by ``provider``; local models are free unless priced."""
        pc = self.providers.get(provider)
        if pc is not None:
            for spec in pc.models:
                if spec.name == model and spec.price is not None:
                    return spec.price
        explicit = self.pricing.get(f"{provider}/{model}") or self.pricing.get(model)
        if explicit is not None:
            return explicit
        return FREE


def default_config_path() -> Path:
    env = os.environ.get("OMEN_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def _shipped(name: str) -> dict[str, Any]:
    text = resources.files("omen_local.resources").joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | str | None = None, *, overrides: dict[str, Any] | None = None) -> Config:
    """Load the shipped defaults, merge the user's file (if any) and ``overrides`` over them.

    ``path=None`` means the default location, which may be absent; an explicit path
    that does not exist is an error.
    """
    raw = _shipped("default_config.toml")
    source: Path | None = None
    if path is None:
        candidate = default_config_path()
        if candidate.is_file():
            source = candidate
        elif os.environ.get("OMEN_CONFIG"):
            raise ConfigError(f"OMEN_CONFIG points to {candidate}, which does not exist")
    else:
        source = Path(path).expanduser()
        if not source.is_file():
            raise ConfigError(f"config file {source} does not exist")
    if source is not None:
        try:
            user = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        raw = _merge(raw, user)
    if overrides:
        raw = _merge(raw, overrides)
    # A user's price entry replaces the shipped one whole (no stale cache rates left behind).
    pricing_raw = {**_shipped("pricing.toml"), **_table(raw.pop("pricing", {}), "pricing")}
    return parse_config(raw, pricing_raw, source=source)


# ---------------------------------------------------------------- parsing


def _table(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    return raw


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (allowed: {', '.join(sorted(allowed))})")


def _num(table: dict[str, Any], key: str, where: str, default: float, *, minimum: float = 0.0) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:  # NaN too
        raise ConfigError(f"{where}.{key} must be a number >= {minimum:g}")
    return float(value)


def _int(table: dict[str, Any], key: str, where: str, default: int, *, minimum: int = 0) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{key} must be an integer >= {minimum}")
    return value


def _str(table: dict[str, Any], key: str, where: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _bool(table: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    return value


def _choice(table: dict[str, Any], key: str, where: str, default: str, choices: tuple[str, ...]) -> str:
    value = _str(table, key, where, default)
    if value not in choices:
        raise ConfigError(f"{where}.{key} must be one of {', '.join(choices)}")
    return value


def _strs(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _price(raw: Any, where: str) -> Price:
    table = _table(raw, where)
    _check_keys(table, {"input", "output", "cached_input", "cache_write"}, where)
    cached = table.get("cached_input")
    write = table.get("cache_write")
    return Price(
        input=_num(table, "input", where, 0.0),
        output=_num(table, "output", where, 0.0),
        cached_input=None if cached is None else _num(table, "cached_input", where, 0.0),
        cache_write=None if write is None else _num(table, "cache_write", where, 0.0),
    )


def _model(raw: Any, where: str) -> ModelSpec:
    if isinstance(raw, str):
        return ModelSpec(name=raw)
    table = _table(raw, where)
    _check_keys(
        table,
        {"name", "context_window", "input", "output", "cached_input", "cache_write", "reasoning"},
        where,
    )
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name must be a non-empty string")
    price_keys = {k: table[k] for k in ("input", "output", "cached_input", "cache_write") if k in table}
    window = table.get("context_window")
    if window is not None:
        window = _int(table, "context_window", where, 0, minimum=1)
    reasoning = None if table.get("reasoning") is None else _bool(table, "reasoning", where, False)
    return ModelSpec(name=name, context_window=window, price=_price(price_keys, where) if price_keys else None, reasoning=reasoning)


def _provider(name: str, raw: Any) -> ProviderConfig:
    where = f"providers.{name}"
    table = _table(raw, where)
    _check_keys(
        table,
        {"kind", "base_url", "enabled", "key", "models", "discover", "headers", "anthropic_version", "ca_file", "trust_owner", "dialect"},
        where,
    )
    if "/" in name or not name:
        raise ConfigError(f"provider name {name!r} must be non-empty and contain no '/'")
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(sorted(KINDS))}")
    base_url = _str(table, "base_url", where, "").rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must be an http(s) URL")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false")
    models_raw = table.get("models", [])
    if not isinstance(models_raw, list):
        raise ConfigError(f"{where}.models must be a list")
    headers = _table(table.get("headers"), f"{where}.headers")
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}.headers values must be strings")
    discover = table.get("discover", KINDS[kind])
    if not isinstance(discover, bool):
        raise ConfigError(f"{where}.discover must be true or false")
    keys = _strs(table, "key", where)
    for ref in keys:
        scheme, _, rest = ref.partition(":")
        if scheme not in ("keyring", "env") or not rest:
            raise ConfigError(
                f"{where}.key entries must be 'keyring:NAME' or 'env:VARIABLE' (never the key itself)"
            )
    dialect = table.get("dialect")
    if dialect is not None:
        if kind != "openai":
            raise ConfigError(f"{where}.dialect is only for kind = \"openai\" (OpenAI-compatible servers)")
        if dialect not in DIALECT_NAMES:
            raise ConfigError(f"{where}.dialect must be one of {', '.join(sorted(DIALECT_NAMES))}")
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        enabled=enabled,
        key=keys,
        models=tuple(_model(m, f"{where}.models[{i}]") for i, m in enumerate(models_raw)),
        discover=discover,
        headers=dict(headers),
        anthropic_version=_str(table, "anthropic_version", where, "2023-06-01"),
        ca_file=_ca_file(table, where),
        trust_owner=_str(table, "trust_owner", where, "") or None,
        dialect=dialect,
    )


def _ca_file(table: dict[str, Any], where: str) -> str | None:
    """``ca_file``: a PEM file of CAs to trust for this upstream (besides the system's)."""
    if table.get("ca_file") is None:
        return None
    path = os.path.expanduser(_str(table, "ca_file", where, ""))
    if not os.path.isfile(path):
        raise ConfigError(f"{where}.ca_file {path!r} is not a file")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise ConfigError(f"{where}.ca_file {path!r} holds no usable PEM certificates ({exc})") from None
    return path


def _limit(table: dict[str, Any], key: str, where: str, *, integer: bool) -> float | None:
    """A limit value: a number >= 0, or "none" for no limit (overriding a default)."""
    value = table.get(key)
    if value is None:
        return None
    if value == "none":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f'{where}.{key} must be {kind} >= 0, or "none" for no limit')
    return float(value)


def _quota_limits(raw: Any, where: str) -> QuotaLimits:
    table = _table(raw, where)
    _check_keys(table, set(QuotaLimits.__dataclass_fields__), where)
    return QuotaLimits(
        daily_usd=_limit(table, "daily_usd", where, integer=False),
        monthly_usd=_limit(table, "monthly_usd", where, integer=False),
        daily_tokens=_limit(table, "daily_tokens", where, integer=True),
        monthly_tokens=_limit(table, "monthly_tokens", where, integer=True),
    )


def _rate_limits(raw: Any, where: str) -> RateLimits:
    table = _table(raw, where)
    _check_keys(table, set(RateLimits.__dataclass_fields__), where)
    return RateLimits(rpm=_limit(table, "rpm", where, integer=True), tpm=_limit(table, "tpm", where, integer=True))


def _quotas(raw: Any) -> QuotaConfig:
    table = _table(raw, "quotas")
    _check_keys(table, {"default_user", "default_workspace", "users", "workspaces"}, "quotas")
    return QuotaConfig(
        default_user=_quota_limits(table.get("default_user"), "quotas.default_user"),
        default_workspace=_quota_limits(table.get("default_workspace"), "quotas.default_workspace"),
        users={k: _quota_limits(v, f"quotas.users.{k}") for k, v in _table(table.get("users"), "quotas.users").items()},
        workspaces={
            k: _quota_limits(v, f"quotas.workspaces.{k}")
            for k, v in _table(table.get("workspaces"), "quotas.workspaces").items()
        },
    )


def _limits(raw: Any, providers: dict[str, ProviderConfig]) -> LimitConfig:
    table = _table(raw, "limits")
    _check_keys(table, {"default_user", "default_workspace", "users", "workspaces", "providers"}, "limits")
    per_provider = _table(table.get("providers"), "limits.providers")
    for name in per_provider:
        if name not in providers:
            raise ConfigError(f"limits.providers.{name}: no provider named {name!r} is configured")
    return LimitConfig(
        default_user=_rate_limits(table.get("default_user"), "limits.default_user"),
        default_workspace=_rate_limits(table.get("default_workspace"), "limits.default_workspace"),
        users={k: _rate_limits(v, f"limits.users.{k}") for k, v in _table(table.get("users"), "limits.users").items()},
        workspaces={
            k: _rate_limits(v, f"limits.workspaces.{k}")
            for k, v in _table(table.get("workspaces"), "limits.workspaces").items()
        },
        providers={k: _rate_limits(v, f"limits.providers.{k}") for k, v in per_provider.items()},
    )


def _discovery(raw: Any) -> DiscoveryConfig:
    table = _table(raw, "discovery")
    _check_keys(table, {"local", "extra"}, "discovery")
    extra = _strs(table, "extra", "discovery")
    for url in extra:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"discovery.extra entries must be http(s) base URLs of an OpenAI API, not {url!r}")
    return DiscoveryConfig(local=_bool(table, "local", "discovery", True), extra=extra)


ALIAS_KEYS = {"description", "intent", "strategy", "k", "providers", "local_only", "budget_usd", "max_latency_ms"}


def _alias(name: str, raw: Any, intents: dict[str, tuple[str, ...]], providers: dict[str, ProviderConfig]) -> Alias:
    where = f"aliases.{name}"
    table = _table(raw, where)
    _check_keys(table, ALIAS_KEYS, where)
    if not name or "/" in name or len(name) > 64:
        raise ConfigError(f"alias name {name!r} must be 1-64 characters without '/'")
    intent = table.get("intent")
    if intent is not None and intent not in intents:
        raise ConfigError(f"{where}.intent {intent!r} has no [intents] entry")
    strategy = table.get("strategy")
    if strategy is not None:
        strategy = StrategyName(_choice(table, "strategy", where, "single", STRATEGIES))
    k = table.get("k")
    if k is not None:
        k = _int(table, "k", where, 1, minimum=1)
        if k > 8:
            raise ConfigError(f"{where}.k must be from 1 to 8")
    allow = None
    if "providers" in table:
        allow = _strs(table, "providers", where)
        unknown = [p for p in allow if p not in providers]
        if unknown or not allow:
            raise ConfigError(f"{where}.providers must name configured providers (unknown: {', '.join(unknown) or 'empty list'})")
    budget = table.get("budget_usd")
    latency = table.get("max_latency_ms")
    return Alias(
        name=name,
        description=_str(table, "description", where, ""),
        intent=intent,
        strategy=strategy,
        k=k,
        providers=allow,
        local_only=_bool(table, "local_only", where, False),
        budget_usd=None if budget is None else _num(table, "budget_usd", where, 0.0),
        max_latency_ms=None if latency is None else _int(table, "max_latency_ms", where, 1, minimum=1),
    )


def default_instance() -> str:
    """user@host: how a teammate's OMEN shows in the team's books unless named."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without one)
        user = "omen"
    return f"{user}@{socket.gethostname()}"


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _team_url(value: str, key: str) -> str:
    """``env:NAME``: the URL (with its password) from the environment, so a config file that
    can be shared or mounted world-readable need not hold it (deploy/compose.yaml)."""
    if not value.startswith("env:"):
        return value
    name = value[4:]
    found = os.environ.get(name)
    if not found:
        raise ConfigError(f"team.{key} = {value!r}: the environment variable {name} is not set")
    return found


def _team(raw: Any) -> TeamConfig | None:
    if raw is None:
        return None
    table = _table(raw, "team")
    _check_keys(table, {"database_url", "redis_url", "instance"}, "team")
    url = _team_url(_str(table, "database_url", "team", ""), "database_url")
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("team.database_url must be a postgresql:// URL (the team's usage store)")
    redis_url = _team_url(_str(table, "redis_url", "team", ""), "redis_url") or None
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("team.redis_url must be a redis://, rediss:// or unix:// URL")
    for key, value in (("database_url", url), ("redis_url", redis_url or "")):
        if _BAD_PERCENT.search(value):  # libpq quotes the bad token (the password) in its error
            raise ConfigError(f"team.{key}: a '%' not followed by two hex digits; percent-encode the "
                              "password ('%' is %25, '@' %40, '/' %2F, ':' %3A)")
    instance = _str(table, "instance", "team", "") or default_instance()
    if len(instance) > 200 or any(not c.isprintable() for c in instance):
        raise ConfigError("team.instance must be printable text of at most 200 characters")
    return TeamConfig(database_url=url, redis_url=redis_url, instance=instance)


def _aliases(raw: Any, intents: dict[str, tuple[str, ...]], providers: dict[str, ProviderConfig]) -> dict[str, Alias]:
    table = _table(raw, "aliases")
    return {name: _alias(name, value, intents, providers) for name, value in table.items() if not isinstance(value, str)}


def _model_map(raw: Any, aliases: dict[str, Alias], providers: dict[str, ProviderConfig]) -> tuple[tuple[str, str], ...]:
    """``[aliases]`` string entries: a model-name glob and the alias (or provider/model) it means."""
    table = _table(raw, "aliases")
    out: list[tuple[str, str]] = []
    for pattern, target in table.items():
        if not isinstance(target, str):
            continue
        if not pattern or len(pattern) > 128 or "/" in pattern:
            raise ConfigError(f"aliases.{pattern!r}: a model-name pattern must be 1-128 characters without '/'")
        provider, sep, model = target.partition("/")
        if not (target == "auto" or target in aliases or (sep and provider in providers and model)):
            raise ConfigError(
                f"aliases.{pattern!r} = {target!r}: the target must be 'auto', an alias ([aliases.NAME]) or 'provider/model' of a configured provider"
            )
        out.append((pattern, target))
    # The most literal characters first, so "claude-haiku-*" wins over "claude-*" and "*haiku*".
    out.sort(key=lambda pt: -len(pt[0].replace("*", "").replace("?", "")))
    return tuple(out)


def parse_config(raw: dict[str, Any], pricing_raw: dict[str, Any], *, source: Path | None = None) -> Config:
    _check_keys(
        raw,
        {"server", "defaults", "providers", "intents", "storage", "quotas", "limits", "aliases", "discovery", "team"},
        "config",
    )
    srv = _table(raw.get("server"), "server")
    _check_keys(srv, {"host", "port", "max_body_mb", "allowed_hosts", "allowed_origins", "tls_cert", "tls_key", "request_log"}, "server")
    server = ServerConfig(
        host=_str(srv, "host", "server", "127.0.0.1"),
        port=_int(srv, "port", "server", 8765),
        max_body_bytes=int(_num(srv, "max_body_mb", "server", 20.0, minimum=0.001) * 1024 * 1024),
        allowed_hosts=tuple(h.lower() for h in _strs(srv, "allowed_hosts", "server")),
        allowed_origins=_strs(srv, "allowed_origins", "server"),
        tls_cert=_str(srv, "tls_cert", "server", "") or None,
        tls_key=_str(srv, "tls_key", "server", "") or None,
        request_log=_bool(srv, "request_log", "server", True),
    )
    if server.port > 65535:
        raise ConfigError("server.port must be <= 65535")
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert and server.tls_key go together (a PEM certificate and its key)")

    d = _table(raw.get("defaults"), "defaults")
    dd = Defaults()
    _check_keys(d, set(Defaults.__dataclass_fields__), "defaults")
    strategy = StrategyName(_choice(d, "strategy", "defaults", dd.strategy, STRATEGIES))
    budget = d.get("budget_usd")
    defaults = Defaults(
        strategy=strategy,
        intent=_str(d, "intent", "defaults", dd.intent),
        k=_int(d, "k", "defaults", dd.k, minimum=1),
        connect_timeout_s=_num(d, "connect_timeout_s", "defaults", dd.connect_timeout_s, minimum=0.001),
        first_token_timeout_s=_num(d, "first_token_timeout_s", "defaults", dd.first_token_timeout_s, minimum=0.001),
        idle_timeout_s=_num(d, "idle_timeout_s", "defaults", dd.idle_timeout_s, minimum=0.001),
        request_timeout_s=_num(d, "request_timeout_s", "defaults", dd.request_timeout_s, minimum=0.001),
        budget_usd=None if budget is None else _num(d, "budget_usd", "defaults", 0.0),
        health_interval_s=_num(d, "health_interval_s", "defaults", dd.health_interval_s, minimum=0.1),
        failure_cooldown_s=_num(d, "failure_cooldown_s", "defaults", dd.failure_cooldown_s),
        assumed_output_tokens=_int(d, "assumed_output_tokens", "defaults", dd.assumed_output_tokens, minimum=1),
        guess_intent=_bool(d, "guess_intent", "defaults", dd.guess_intent),
        stickiness=_choice(d, "stickiness", "defaults", dd.stickiness, ("none", "session")),
        sticky_ttl_s=_num(d, "sticky_ttl_s", "defaults", dd.sticky_ttl_s, minimum=1.0),
        breaker_failures=_int(d, "breaker_failures", "defaults", dd.breaker_failures, minimum=1),
        speculation_window_ms=_int(d, "speculation_window_ms", "defaults", dd.speculation_window_ms, minimum=1),
        merge_wait_ms=_int(d, "merge_wait_ms", "defaults", dd.merge_wait_ms, minimum=1),
        merge_model=_str(d, "merge_model", "defaults", dd.merge_model),
    )

    providers_raw = _table(raw.get("providers"), "providers")
    providers = {name: _provider(name, value) for name, value in providers_raw.items()}

    intents_raw = _table(raw.get("intents"), "intents")
    intents: dict[str, tuple[str, ...]] = {}
    for intent in intents_raw:
        refs_t = _strs(intents_raw, intent, "intents")
        for ref in refs_t:
            prov = ref.split("/", 1)[0]
            if "/" not in ref or prov not in providers:
                raise ConfigError(
                    f"intents.{intent}: {ref!r} must be 'provider/model' with a configured provider"
                )
        intents[intent] = refs_t
    if defaults.merge_model and defaults.merge_model.split("/", 1)[0] not in providers:
        raise ConfigError("defaults.merge_model must be 'provider/model' with a configured provider")
    if defaults.intent not in intents:
        raise ConfigError(f"defaults.intent {defaults.intent!r} has no [intents] entry")

    pricing = {model: _price(value, f"pricing.{model}") for model, value in pricing_raw.items()}

    storage = _table(raw.get("storage"), "storage")
    _check_keys(storage, {"data_dir"}, "storage")
    data_dir_s = _str(storage, "data_dir", "storage", "")
    data_dir = Path(data_dir_s).expanduser() if data_dir_s else Path(platformdirs.user_data_dir(APP_NAME))
    config_dir = source.parent if source is not None else default_config_path().parent
    return Config(
        server=server,
        defaults=defaults,
        providers=providers,
        intents=intents,
        pricing=pricing,
        data_dir=data_dir,
        config_dir=config_dir,
        source=source,
        quotas=_quotas(raw.get("quotas")),
        limits=_limits(raw.get("limits"), providers),
        aliases=(aliases := _aliases(raw.get("aliases"), intents, providers)),
        discovery=_discovery(raw.get("discovery")),
        model_map=_model_map(raw.get("aliases"), aliases, providers),
        team=_team(raw.get("team")),
    )
