"""Arguments against a tool's inputSchema, structured results against its outputSchema.

Validators are compiled once per distinct schema (compiling costs far more than
validating). ``$ref`` resolves within the schema only: Glyph never fetches a schema from
the network. A schema that is itself invalid rejects every call to its tool.
"""

from __future__ import annotations

import hashlib
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from glyph.audit import canonical_json

MAX_ERRORS = 5


class Schemas:
    def __init__(self) -> None:
        self._cache: dict[str, Validator | str] = {}

    def _validator(self, schema: dict[str, Any]) -> Validator | str:
        key = hashlib.sha256(canonical_json(schema).encode("utf-8")).hexdigest()
        cached = self._cache.get(key)
        if cached is None:
            cls = validator_for(schema, default=Draft202012Validator)
            try:
                cls.check_schema(schema)
                cached = cls(schema, registry=Registry())
            except SchemaError as exc:
                cached = f"the tool's schema is invalid: {exc.message}"
            self._cache[key] = cached
        return cached

    def check(self, schema: dict[str, Any], instance: Any) -> list[str]:
        """Readable problems (``at /path: message``), empty when the instance is valid."""
        validator = self._validator(schema)
        if isinstance(validator, str):
            return [validator]
        try:
            errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
            problems = [f"at /{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]
        except Unresolvable as exc:
            return [f"the tool's schema has a $ref that does not resolve: {exc}"]
        return problems[:MAX_ERRORS]
