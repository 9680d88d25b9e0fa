"""The one SSE writer: OpenAI ``chat.completion.chunk`` frames from normalized chunks."""

from __future__ import annotations

import time
from typing import Any

from .. import jsonutil
from ..errors import OmenError
from ..providers.base import Chunk, Usage

DONE = b"data: [DONE]\n\n"


class ChunkEncoder:
    """Encodes chunks of one response; the first carries ``role: assistant``."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self._first = True

    def _frame(self, obj: dict[str, Any]) -> bytes:
        return b"data: " + jsonutil.dumps(obj) + b"\n\n"

    def chunk(self, chunk: Chunk) -> bytes:
        delta = chunk.delta
        if self._first:
            self._first = False
            delta = {"role": "assistant", **delta}
            if "content" not in delta and "tool_calls" not in delta:
                delta["content"] = ""
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": chunk.finish_reason}],
        }
        if chunk.omen is not None:
            frame["omen"] = chunk.omen
        return self._frame(frame)

    def usage(self, usage: Usage, omen: dict[str, Any] | None = None) -> bytes:
        """The include_usage chunk; ``omen`` says what it cost and whether the counts are estimates."""
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_openai(),
        }
        if omen is not None:
            frame["omen"] = omen
        return self._frame(frame)

    def error(self, err: OmenError) -> bytes:
        """An error frame: the OpenAI SDK raises APIError on it; no [DONE] follows."""
        return self._frame(err.body())
