"""JSON Schema builders, and argument validation with the ``jsonschema`` library.

Validators are compiled once per tool schema (the schemas are fixed for the process).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from rune.errors import RuneError

JSON = dict[str, Any]

def obj(properties: Mapping[str, JSON], required: Sequence[str] = (), *, closed: bool = True) -> JSON:
    """An object schema; input schemas are closed so a misspelt argument is an error, not a no-op."""
    schema: JSON = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def string(description: str = "", **extra: Any) -> JSON:
    return _with({"type": "string"}, description, extra)


def integer(description: str = "", **extra: Any) -> JSON:
    return _with({"type": "integer"}, description, extra)


def boolean(description: str = "", **extra: Any) -> JSON:
    return _with({"type": "boolean"}, description, extra)


def array(items: JSON, description: str = "", **extra: Any) -> JSON:
    return _with({"type": "array", "items": items}, description, extra)


def nullable(schema: JSON) -> JSON:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def _with(base: JSON, description: str, extra: Mapping[str, Any]) -> JSON:
    if description:
        base["description"] = description
    base.update(extra)
    return base


def apply_defaults(schema: JSON, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the arguments with top-level defaults filled in, so handlers read plain keys."""
    out = dict(arguments)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and "default" in prop:
            default = prop["default"]
            out[name] = list(default) if isinstance(default, list) else default
    return out


_VALIDATORS: dict[int, tuple[JSON, Any]] = {}


def _validator(schema: JSON) -> Any:
    hit = _VALIDATORS.get(id(schema))
    if hit is None or hit[0] is not schema:
        hit = _VALIDATORS[id(schema)] = (schema, jsonschema.Draft202012Validator(schema))
    return hit[1]


def validate(schema: JSON, value: Any, where: str = "arguments") -> None:
    """Raise RuneError('invalid_arguments') naming the place where ``value`` breaks ``schema``."""
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    if error is not None:
        place = ".".join(str(p) for p in error.absolute_path) or where
        raise RuneError("invalid_arguments", f"{place}: {error.message}")
