"""Validation of ``POST /v1/embeddings`` bodies (OpenAI shape).

``input`` is a string, a list of strings, a token array or a list of token arrays; the
adapters get the body without ``model``, ``omen`` and ``encoding_format`` (they always
fetch floats; the door encodes base64 itself). Fields OMEN does not know pass through
to OpenAI-compatible upstreams, as on the chat door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import invalid
from .hints import Hints, parse_hints
from .shape import checked_body, is_int

MAX_INPUTS = 2048  # OpenAI's limit on one request's inputs
ENCODINGS = ("float", "base64")


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class EmbeddingsRequest:
    model: str
    body: dict[str, Any]  # what an adapter's embed() takes
    encoding_format: str  # how the door returns the vectors
    hints: Hints

    @property
    def count(self) -> int:
        """How many vectors the answer must hold."""
        value = self.body["input"]
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return 1
        return len(value)



def _tokens(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(is_int(t) and t >= 0 for t in v)


def check_input(value: Any) -> None:
    """A 400 naming ``input`` unless it is one of OpenAI's four input shapes, none empty."""
    if isinstance(value, str):
        if not value:
            raise invalid("input must not be an empty string", "input")
        return
    if not isinstance(value, list) or not value:
        raise invalid("input must be a string, a list of strings, a token array or a list of token arrays", "input")
    if len(value) > MAX_INPUTS:
        raise invalid(f"input holds {len(value)} items; at most {MAX_INPUTS} go in one request", "input")
    if all(isinstance(v, str) for v in value):
        for i, v in enumerate(value):
            if not v:
                raise invalid(f"input[{i}] must not be an empty string", f"input[{i}]")
        return
    if _tokens(value):
        return
    if all(isinstance(v, list) for v in value):
        for i, v in enumerate(value):
            if not _tokens(v):
                raise invalid(f"input[{i}] must be a non-empty array of token ids", f"input[{i}]")
        return
    raise invalid("input must be a string, a list of strings, a token array or a list of token arrays", "input")


def parse_embeddings_request(raw: Any, *, intents: tuple[str, ...], providers: tuple[str, ...]) -> EmbeddingsRequest:
    """Validate a decoded body; raise a 400 :class:`OmenError` naming the first bad field."""
    raw, model = checked_body(raw)
    if "input" not in raw:
        raise invalid("input is required", "input")
    check_input(raw["input"])
    encoding = raw.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ENCODINGS:
        raise invalid("encoding_format must be 'float' or 'base64'", "encoding_format")
    dims = raw.get("dimensions")
    if dims is not None and (not is_int(dims) or dims < 1):
        raise invalid("dimensions must be a positive integer", "dimensions")
    user = raw.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user must be a string", "user")
    hints = parse_hints(raw.get("omen"), intents=intents, providers=providers)
    body = {k: v for k, v in raw.items() if k not in ("model", "omen", "encoding_format") and v is not None}
    return EmbeddingsRequest(model=model, body=body, encoding_format=encoding, hints=hints)
