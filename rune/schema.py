"""JSON Schema builders and a small validator for the subset Rune's own input schemas use.

The schemas are ours, so a ~100-line validator with clear messages beats a general one on
every call; tests check each schema uses only the keywords handled here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rune.errors import RuneError

JSON = dict[str, Any]

SUPPORTED_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "default",
        "description", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
    }
)


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


def validate(schema: JSON, value: Any, where: str = "arguments") -> None:
    """Raise RuneError('invalid_arguments') naming the first place `value` breaks `schema`."""
    problem = _check(schema, value, where)
    if problem:
        raise RuneError("invalid_arguments", problem)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list, tuple), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def _check(schema: JSON, value: Any, where: str) -> str | None:
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is_type(value, n) for n in names):
            return f"{where} must be {' or '.join(names)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {schema['enum']}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} must be >= {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} must be <= {schema['maximum']}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where} must have at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where} must have at most {schema['maxLength']} characters"
    if isinstance(value, (list, tuple)):
        if len(value) < schema.get("minItems", 0):
            return f"{where} must have at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{where} must have at most {schema['maxItems']} items"
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                problem = _check(items, item, f"{where}[{i}]")
                if problem:
                    return problem
    if isinstance(value, dict):
        props: Mapping[str, JSON] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                return f"{where}: '{name}' is required"
        for name, item in value.items():
            if name in props:
                problem = _check(props[name], item, f"{where}.{name}" if where != "arguments" else name)
                if problem:
                    return problem
            elif schema.get("additionalProperties", True) is False:
                return f"{where}: unknown argument '{name}' (known: {', '.join(props)})"
    return None
