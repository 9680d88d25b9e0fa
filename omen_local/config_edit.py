"""Edits to the user's config file that keep its comments and layout (tomlkit round trip).

The tray app's Settings and the ``omen provider`` CLI change one key at a time; the
user's own file stays theirs: comments, blank lines, key order and quoting survive.
Every edit is checked by loading the result with :func:`omen_local.config.load_config`
before the file is replaced (atomically), so a bad value never reaches the disk.
Only what differs from the shipped defaults is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Array, InlineTable, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from .config import STRATEGIES, Config, ConfigError, load_config
from .private_files import private_dir

Edit = Callable[[TOMLDocument], None]


def read_document(path: Path) -> TOMLDocument:
    """The file as a tomlkit document (an empty one when the file does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return tomlkit.document()
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def apply(path: Path, *edits: Edit) -> Config:
    """Apply ``edits`` to the file at ``path``, validate, write atomically; return the new Config."""
    path = Path(path).expanduser()
    doc = read_document(path)
    before = set(_table_paths(doc))
    for edit in edits:
        edit(doc)
    for key, table in _table_paths(doc).items():
        if key not in before:  # a new section ends with a blank line, like the ones around it
            body = table.value.body
            if body and not isinstance(body[-1][1], Whitespace):
                table.add(tomlkit.nl())
    text = tomlkit.dumps(doc)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        load_config(tmp)  # raises ConfigError naming the key; the real file is untouched
        mode = path.stat().st_mode & 0o700 if path.exists() else 0o600  # user-only, like every file of ours
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return load_config(path)


# ---------------------------------------------------------------- document helpers


def _table_paths(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Table]:
    found: dict[tuple[str, ...], Table] = {}
    for key, item in node.items():
        if isinstance(item, Table):
            path = (*prefix, str(key))
            if not item.is_super_table():
                found[path] = item
            found.update(_table_paths(item, path))
    return found


def _table(doc: TOMLDocument | Table, *keys: str) -> Table:
    """The table at ``keys``, created (as a proper ``[a.b]`` section) when missing."""
    node: Any = doc
    for key in keys:
        if key not in node:
            node[key] = tomlkit.table(is_super_table=True) if key != keys[-1] else tomlkit.table()
        node = node[key]
        if not isinstance(node, Table) and not hasattr(node, "keys"):
            raise ConfigError(f"{'.'.join(keys)} is not a table in the config file")
    return node  # type: ignore[no-any-return]


def _set(table: Any, key: str, value: Any) -> None:
    """Set a value; a value of None removes the key (back to the default)."""
    if value is None:
        if key in table:
            del table[key]
    else:
        table[key] = value


# ---------------------------------------------------------------- edits (pure over a document)


def provider_enabled(name: str, enabled: bool) -> Edit:
    def edit(doc: TOMLDocument) -> None:
        _table(doc, "providers", name)["enabled"] = enabled

    return edit


def provider_table(name: str, values: Mapping[str, Any]) -> Edit:
    """Set (or add) keys of ``[providers.NAME]``; a None value removes that key."""

    def edit(doc: TOMLDocument) -> None:
        table = _table(doc, "providers", name)
        for key, value in values.items():
            if key == "models" and isinstance(value, list):
                value = _models_array(value)
            _set(table, key, value)

    return edit


def _models_array(models: list[Any]) -> Any:
    """Models as a multi-line array of inline tables (or plain names), like the shipped file."""
    array = tomlkit.array()
    array.multiline(len(models) > 1)
    for m in models:
        if isinstance(m, dict):
            inline = tomlkit.inline_table()
            inline.update(m)
            array.append(inline)
        else:
            array.append(m)
    return array


ModelRow = tuple[str | None, Mapping[str, Any]]


def provider_models(name: str, rows: Sequence[ModelRow], current: Sequence[Mapping[str, Any]]) -> Edit:
    """``[providers.NAME].models`` as edited in a table that shows some of each model's keys.

    ``rows`` are the table's rows in order: (the model's name as loaded, or None for a new row;
    the keys the user changed, a None value removing that key). Every other key of a model
    (``cached_input``, ``cache_write``, ``reasoning``) and the array's comments stay as they
    were; a model no row names is removed; new rows are appended. Where the file lists no
    models yet, ``current`` (the models as loaded, the shipped ones included) is the start,
    so nothing the loaded config priced is lost by saving one cell.
    """

    def edit(doc: TOMLDocument) -> None:
        table = _table(doc, "providers", name)
        existing = table.get("models")
        array = existing if isinstance(existing, Array) else _models_array(
            [dict(m) if set(m) != {"name"} else m["name"] for m in current])
        kept = {orig for orig, _ in rows if orig is not None}
        for i in reversed(range(len(array))):
            if _model_name(array[i]) not in kept:
                del array[i]
        index = {_model_name(item): i for i, item in enumerate(array)}
        for orig, changes in rows:
            if orig is None:
                values = {k: v for k, v in changes.items() if v is not None}
                if values.get("name"):
                    array.append(_model_item(values))
                continue
            at = index.get(orig)
            if at is None or not changes:
                continue
            item = array[at]
            if not isinstance(item, InlineTable):  # a plain name gets a key: an inline table
                array[at] = _model_item({"name": _model_name(item)}, inline=True)
                item = array[at]
            for key, value in changes.items():
                _set(item, key, value)
        table["models"] = array

    return edit


def _model_name(item: Any) -> str | None:
    if isinstance(item, str):
        return str(item)
    if isinstance(item, Mapping) and isinstance(item.get("name"), str):
        return str(item["name"])
    return None


def _model_item(values: Mapping[str, Any], inline: bool = False) -> Any:
    if not inline and set(values) == {"name"}:
        return values["name"]
    table = tomlkit.inline_table()
    table.update(values)
    return table


def default_strategy(strategy: str) -> Edit:
    if strategy not in STRATEGIES:
        raise ConfigError(f"defaults.strategy must be one of {', '.join(STRATEGIES)}")

    def edit(doc: TOMLDocument) -> None:
        _table(doc, "defaults")["strategy"] = strategy

    return edit


def _limit_edit(section: str, scope: str, name: str | None, values: Mapping[str, float | str | None]) -> Edit:
    """``[section.default_user]`` (name None) or ``[section.users.NAME]``; None removes a key.
    A table left empty is removed (and its empty parents): "no limit" leaves no trace."""

    def edit(doc: TOMLDocument) -> None:
        keys = (section, f"default_{scope}") if name is None else (section, f"{scope}s", name)
        if not _has(doc, keys) and all(v is None for v in values.values()):
            return  # nothing to set, nothing to remove: do not create the table
        table = _table(doc, *keys)
        for key, value in values.items():
            _set(table, key, value)
        _prune(doc, keys)

    return edit


def _has(doc: TOMLDocument, keys: tuple[str, ...]) -> bool:
    node: Any = doc
    for key in keys:
        if not hasattr(node, "keys") or key not in node:
            return False
        node = node[key]
    return True


def _prune(doc: TOMLDocument, keys: tuple[str, ...]) -> None:
    """Remove the table at ``keys`` if it holds nothing, then each parent left empty."""
    for depth in range(len(keys), 0, -1):
        parent: Any = doc
        for key in keys[:depth - 1]:
            parent = parent[key]
        node = parent[keys[depth - 1]]
        if not hasattr(node, "keys") or len(node) > 0:
            return
        del parent[keys[depth - 1]]


def quota(scope: str, name: str | None, values: Mapping[str, float | str | None]) -> Edit:
    """Quota keys (daily_usd, monthly_usd, daily_tokens, monthly_tokens) for a user or workspace."""
    if scope not in ("user", "workspace"):
        raise ConfigError("a quota applies to a user or a workspace")
    return _limit_edit("quotas", scope, name, values)


def limit(scope: str, name: str | None, values: Mapping[str, float | str | None]) -> Edit:
    """Rate-limit keys (rpm, tpm) for a user, a workspace or (with a name) a provider."""
    if scope not in ("user", "workspace", "provider"):
        raise ConfigError("a rate limit applies to a user, a workspace or a provider")
    if scope == "provider" and name is None:
        raise ConfigError("a provider rate limit names the provider")
    return _limit_edit("limits", scope, name, values)


def team(database_url: str, redis_url: str = "", instance: str = "") -> Edit:
    """``[team]`` (docs/team.md); no database URL removes the table (back to one machine), an
    empty Redis URL or instance removes that key (local quotas; the default user@host)."""

    def edit(doc: TOMLDocument) -> None:
        if not database_url.strip():
            if "team" in doc:
                del doc["team"]
            return
        table = _table(doc, "team")
        table["database_url"] = database_url.strip()
        _set(table, "redis_url", redis_url.strip() or None)
        _set(table, "instance", instance.strip() or None)

    return edit


def server(host: str | None = None, port: int | None = None) -> Edit:
    def edit(doc: TOMLDocument) -> None:
        table = _table(doc, "server")
        if host is not None:
            table["host"] = host
        if port is not None:
            table["port"] = port

    return edit


def intent_ref(intent: str, ref: str, current: tuple[str, ...], position: int | None = None) -> Edit:
    """Add ``provider/model`` to an intent bucket (once). ``current`` is the bucket as loaded
    (the user's file may not list it yet, since it is merged over the shipped one)."""

    def edit(doc: TOMLDocument) -> None:
        table = _table(doc, "intents")
        if intent in table:
            refs = [str(r) for r in table[intent]]
        else:
            refs = list(current)
        if ref in refs:
            return
        refs.insert(len(refs) if position is None else position, ref)
        array = tomlkit.array()
        array.extend(refs)
        table[intent] = array

    return edit


# ---------------------------------------------------------------- one-call helpers over a path


def set_provider_enabled(path: Path, name: str, enabled: bool) -> Config:
    return apply(path, provider_enabled(name, enabled))


def set_provider(path: Path, name: str, values: Mapping[str, Any]) -> Config:
    return apply(path, provider_table(name, values))


def set_default_strategy(path: Path, strategy: str) -> Config:
    return apply(path, default_strategy(strategy))


def set_quota(path: Path, scope: str, name: str | None, values: Mapping[str, float | str | None]) -> Config:
    return apply(path, quota(scope, name, values))


def set_limit(path: Path, scope: str, name: str | None, values: Mapping[str, float | str | None]) -> Config:
    return apply(path, limit(scope, name, values))


def set_server(path: Path, host: str | None = None, port: int | None = None) -> Config:
    return apply(path, server(host, port))


def add_intent_ref(path: Path, intent: str, ref: str, position: int | None = None) -> Config:
    current = load_config(path if Path(path).exists() else None).intents.get(intent, ())
    return apply(path, intent_ref(intent, ref, current, position))
