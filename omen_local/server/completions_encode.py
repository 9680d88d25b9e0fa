"""``/v1/completions`` answers in OpenAI's shape: ``text_completion`` objects and stream chunks.

Streams are ``data: {text_completion}`` frames whose ``choices[0].text`` carries the
pieces, a last one with ``finish_reason``, then (with ``stream_options.include_usage``)
a frame with empty ``choices`` and ``usage``, then ``data: [DONE]``. A failure after
the start is an error frame and no ``[DONE]``, as on the chat door.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import jsonutil
from ..errors import OmenError
from ..providers.base import Chunk, Completion, Usage

DONE = b"data: [DONE]\n\n"


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def completion_body(done: Completion, completion_id: str, model: str) -> dict[str, Any]:
    """A provider's ``text_completion`` with OMEN's id, one choice and the metered usage."""
    choice = (done.body.get("choices") or [{}])[0]
    text = choice.get("text")
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "text": text if isinstance(text, str) else "",
                "index": 0,
                "logprobs": None,
                "finish_reason": choice.get("finish_reason") or "stop",
            }
        ],
        "usage": usage_object(done.usage),
    }


class CompletionEncoder:
    """Normalized chunks -> ``text_completion`` stream frames (a :class:`door_kit.FrameEncoder`)."""

    def __init__(self, completion_id: str, model: str, *, include_usage: bool) -> None:
        self.id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _frame(self, obj: dict[str, Any]) -> bytes:
        return b"data: " + jsonutil.dumps(obj) + b"\n\n"

    def _chunk(self, text: str, finish: str | None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return self._frame({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": [choice]})

    def start(self) -> bytes:
        return b""

    def frames(self, batch: Iterable[Chunk]) -> bytes:
        """The frames of one upstream read's chunks, joined."""
        return b"".join(self.chunk(chunk) for chunk in batch)

    def chunk(self, chunk: Chunk) -> bytes:
        text = chunk.delta.get("content")
        text = text if isinstance(text, str) else ""
        if not text and chunk.finish_reason is None:
            return b""
        return self._chunk(text, chunk.finish_reason)

    def finish(self, usage: Usage) -> bytes:
        if not self.include_usage:
            return DONE
        frame = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": [], "usage": usage_object(usage)}
        return self._frame(frame) + DONE

    def error(self, err: OmenError) -> bytes:
        """An error frame: the OpenAI SDK raises APIError on it; no [DONE] follows."""
        return self._frame(err.body())
