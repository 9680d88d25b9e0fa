"""Glyph's configuration: roots, policy rules, consent defaults and downstream servers.

One file, TOML or JSON (by extension). Downstream servers use the shape editors already
use (``mcpServers``: ``{"name": {"command", "args", "env"} | {"url", "headers"}}``), so an
editor's block can be pasted in. Everything is parsed into frozen dataclasses once; the
rest of Glyph never reads raw dicts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs

APP_NAME = "omen-local"
RUNE = "rune"

Action = Literal["allow", "ask", "deny"]
ACTIONS: tuple[Action, ...] = ("allow", "ask", "deny")

# A server name becomes the prefix of ``server__tool``: no "__" and no trailing "_", so the
# split of an exposed name is unique.
_SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*(?<!_)$")
_ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """The config file is unreadable or says something Glyph will not guess about."""


@dataclass(frozen=True)
class ServerSpec:
    """One downstream MCP server: a command over stdio, or a Streamable HTTP URL."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Whether path-like arguments are local file paths (False for e.g. a remote repo server).
    local_paths: bool = True
    # Whether the server is confined to Glyph's roots by construction (Rune is).
    rooted: bool = False
    # Rune only: run it inside Glyph's process (its Python API) instead of as a subprocess.
    in_process: bool = False

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "http" if self.url else "stdio"


@dataclass(frozen=True)
class Rule:
    """A policy rule: globs over server, tool (downstream name) and path arguments."""

    action: Action
    server: str = "*"
    tool: str = "*"
    path: str | None = None
    index: int = 0  # position in the file, for "decided by rule N"
    # A deny rule with a path hides the paths it covers from every result (listings included);
    # show_names lets listings name them while their content stays withheld.
    show_names: bool = False


@dataclass(frozen=True)
class ConsentSettings:
    auto_allow_read_only: bool = False
    prompt_timeout_s: float = 120.0
    deny_outside_roots: bool = True


@dataclass(frozen=True)
class GlyphConfig:
    roots: tuple[Path, ...] = ()
    servers: dict[str, ServerSpec] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    consent: ConsentSettings = ConsentSettings()
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    call_timeout_s: float = 300.0
    connect_timeout_s: float = 30.0
    source: Path | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "glyph.db"


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "glyph.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "glyph"


def load_config(path: Path | None = None) -> GlyphConfig:
    """Read the config file; a missing default file means the defaults (no roots)."""
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file not found: {path}")
        return parse_config({}, base_dir=Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> GlyphConfig:
    known = {"roots", "data_dir", "call_timeout_s", "connect_timeout_s", "consent", "rules",
             "rune", "mcpServers", "servers"}
    _no_unknown(raw, known, "top level")
    roots = tuple(_path(r, base_dir, "roots") for r in _list(raw.get("roots", []), "roots"))
    data_dir = _path(raw["data_dir"], base_dir, "data_dir") if "data_dir" in raw else default_data_dir()
    consent_raw = _table(raw.get("consent", {}), "consent")
    _no_unknown(consent_raw, {"auto_allow_read_only", "prompt_timeout_s", "deny_outside_roots"}, "consent")
    consent = ConsentSettings(
        auto_allow_read_only=_bool(consent_raw.get("auto_allow_read_only", False), "consent.auto_allow_read_only"),
        prompt_timeout_s=_positive(consent_raw.get("prompt_timeout_s", 120.0), "consent.prompt_timeout_s"),
        deny_outside_roots=_bool(consent_raw.get("deny_outside_roots", True), "consent.deny_outside_roots"),
    )
    rules = tuple(_rule(r, i + 1) for i, r in enumerate(_list(raw.get("rules", []), "rules")))

    servers: dict[str, ServerSpec] = {}
    rune = _rune(_table(raw.get("rune", {}), "rune"), roots)
    if rune is not None:
        servers[RUNE] = rune
    if "mcpServers" in raw and "servers" in raw:
        raise ConfigError("use either mcpServers or servers, not both")
    for name, entry in _table(raw.get("mcpServers", raw.get("servers", {})), "mcpServers").items():
        spec = _server(str(name), _table(entry, f"mcpServers.{name}"))
        if spec is not None:
            servers[spec.name] = spec  # a user entry named "rune" replaces the built-in one
    return GlyphConfig(
        roots=roots,
        servers=servers,
        rules=rules,
        consent=consent,
        data_dir=data_dir,
        call_timeout_s=_positive(raw.get("call_timeout_s", 300.0), "call_timeout_s"),
        connect_timeout_s=_positive(raw.get("connect_timeout_s", 30.0), "connect_timeout_s"),
        source=source,
    )


def rune_spec(roots: tuple[Path, ...], command: str | None = None, args: tuple[str, ...] | None = None,
              in_process: bool = False) -> ServerSpec:
    """Rune as a downstream: ``python -m rune --root R`` once per root, confined to them."""
    base = args if args is not None else ("-m", "rune")
    root_args = tuple(a for r in roots for a in ("--root", str(r)))
    return ServerSpec(name=RUNE, command=command or sys.executable, args=base + root_args, rooted=True,
                      in_process=in_process)


def _rune(raw: dict[str, Any], roots: tuple[Path, ...]) -> ServerSpec | None:
    _no_unknown(raw, {"enabled", "command", "args", "in_process"}, "rune")
    if not _bool(raw.get("enabled", True), "rune.enabled") or not roots:
        return None  # Rune needs at least one root to serve
    command = raw.get("command")
    if command is not None and not isinstance(command, str):
        raise ConfigError("rune.command must be a string")
    args = tuple(_strs(raw["args"], "rune.args")) if "args" in raw else None
    return rune_spec(roots, command, args, _bool(raw.get("in_process", False), "rune.in_process"))


def _server(name: str, raw: dict[str, Any]) -> ServerSpec | None:
    where = f"mcpServers.{name}"
    if not _SERVER_NAME.match(name):
        raise ConfigError(f"{where}: server names use letters, digits, '-' and single '_' (not '__')")
    _no_unknown(raw, {"type", "command", "args", "env", "cwd", "url", "headers", "disabled",
                      "local_paths", "rooted"}, where)
    if _bool(raw.get("disabled", False), f"{where}.disabled"):
        return None
    kind = raw.get("type")
    if kind not in (None, "stdio", "http", "streamable-http", "streamableHttp"):
        raise ConfigError(f"{where}.type: {kind!r} is not supported (stdio or http)")
    command, url = raw.get("command"), raw.get("url")
    if (command is None) == (url is None):
        raise ConfigError(f"{where}: give exactly one of command (stdio) or url (http)")
    if command is not None and not isinstance(command, str):
        raise ConfigError(f"{where}.command must be a string")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}.url must be an http(s) URL")
    cwd = raw.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(f"{where}.cwd must be a string")
    return ServerSpec(
        name=name,
        command=command,
        args=tuple(_strs(raw.get("args", []), f"{where}.args")),
        env=_expand(_str_map(raw.get("env", {}), f"{where}.env")),
        cwd=cwd,
        url=url,
        headers=_expand(_str_map(raw.get("headers", {}), f"{where}.headers")),
        local_paths=_bool(raw.get("local_paths", True), f"{where}.local_paths"),
        rooted=_bool(raw.get("rooted", False), f"{where}.rooted"),
    )


def _rule(raw: Any, index: int) -> Rule:
    where = f"rules[{index}]"
    table = _table(raw, where)
    _no_unknown(table, {"action", "server", "tool", "path", "show_names"}, where)
    action = table.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"{where}.action must be one of {', '.join(ACTIONS)}")
    globs = {k: table.get(k, "*") for k in ("server", "tool")}
    for key, value in globs.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key} must be a non-empty glob")
    path = table.get("path")
    if path is not None and (not isinstance(path, str) or not path or "\0" in path):
        raise ConfigError(f"{where}.path must be a non-empty glob")
    show_names = _bool(table.get("show_names", False), f"{where}.show_names")
    if show_names and (action != "deny" or path is None):
        raise ConfigError(f"{where}.show_names applies to deny rules with a path only")
    return Rule(action=action, server=globs["server"], tool=globs["tool"], path=path, index=index,
                show_names=show_names)


def _expand(values: dict[str, str]) -> dict[str, str]:
    """``${NAME}`` / ``${env:NAME}`` from Glyph's environment, so secrets stay out of the file."""
    return {k: _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), v) for k, v in values.items()}


def _path(value: Any, base_dir: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: paths are non-empty strings")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base_dir / p).resolve()


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table/object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list")
    return value


def _strs(value: Any, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where} must be a list of strings")
    return items


def _str_map(value: Any, where: str) -> dict[str, str]:
    table = _table(value, where)
    if not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(f"{where} values must be strings")
    return {str(k): v for k, v in table.items()}


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} must be a positive number")
    return float(value)


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
