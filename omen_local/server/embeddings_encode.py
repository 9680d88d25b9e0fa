"""``/v1/embeddings`` answers in OpenAI's shape: a ``list`` of ``embedding`` objects.

``encoding_format: "base64"`` is the vector's float32 values, little-endian, base64
encoded (what OpenAI sends and its SDKs decode with ``numpy.frombuffer(..., "<f4")``
or ``array("f")``); ``float`` is the list of numbers.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from ..providers.base import Embeddings, Usage


def base64_vector(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(result: Embeddings, *, encoding_format: str, usage: Usage | None = None) -> dict[str, Any]:
    """The response body; ``usage`` overrides the provider's (an estimate when it reported none)."""
    tokens = (usage or result.usage or Usage()).prompt_tokens
    encode = base64_vector if encoding_format == "base64" else list
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(result.vectors)],
        "model": result.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
