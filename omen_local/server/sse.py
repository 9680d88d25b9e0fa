"""The one SSE writer: OpenAI ``chat.completion.chunk`` frames from normalized chunks.

Every frame of a stream shares its start (``id``, ``object``, ``created``, ``model`` and
the upstream's ``system_fingerprint``), so that part is encoded once per stream and each
chunk adds only its own delta: the bytes are those of encoding the whole object.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import jsonutil
from ..errors import OmenError
from ..providers.base import Chunk, Usage

DONE = b"data: [DONE]\n\n"
_CHOICE = b',"choices":[{"index":0,"delta":'
_NO_FINISH = b',"logprobs":null,"finish_reason":null}]'
_FINISH = b',"logprobs":null,"finish_reason":'
_NO_FINISH_END = _NO_FINISH + b"}\n\n"


class ChunkEncoder:
    """Encodes chunks of one response; the first carries ``role: assistant``.

    Frames carry the ``system_fingerprint`` the upstream sent last (none until it sends one).
    """

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self._model = model
        self.created = int(time.time())
        self.fingerprint: str | None = None
        self._first = True
        self._head: bytes | None = None  # ``data: {"id":..,"model":..`` without the closing brace

    @property
    def model(self) -> str:
        return self._model

    @model.setter
    def model(self, model: str) -> None:
        self._model = model
        self._head = None

    def _start(self) -> bytes:
        head = self._head
        if head is None:
            obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self._model}
            if self.fingerprint is not None:
                obj["system_fingerprint"] = self.fingerprint
            head = self._head = b"data: " + jsonutil.dumps(obj)[:-1]
        return head

    def chunk(self, chunk: Chunk) -> bytes:
        fingerprint = chunk.fingerprint
        if fingerprint is not None and fingerprint != self.fingerprint:
            self.fingerprint = fingerprint
            self._head = None
        delta = chunk.delta
        if self._first:
            self._first = False
            delta = {"role": "assistant", **delta}
            if "content" not in delta and "tool_calls" not in delta:
                delta["content"] = ""
        reason = chunk.finish_reason
        frame = self._start() + _CHOICE + jsonutil.dumps(delta)
        frame += _NO_FINISH if reason is None else _FINISH + jsonutil.dumps(reason) + b"}]"
        if chunk.omen is not None:
            frame += b',"omen":' + jsonutil.dumps(chunk.omen)
        return frame + b"}\n\n"

    def frames(self, chunks: Iterable[Chunk]) -> bytes:
        """The frames of several chunks (one upstream read), joined; chunks with nothing to
        say (no delta, finish or note) are skipped. Same bytes as :meth:`chunk` for each."""
        out: list[bytes] = []
        add = out.append
        dumps = jsonutil.dumps
        opening: bytes | None = None  # the frame's start and the choice's, until the head changes
        for chunk in chunks:
            delta = chunk.delta
            reason = chunk.finish_reason
            if not delta and reason is None and chunk.omen is None:
                continue
            fingerprint = chunk.fingerprint
            if self._first or chunk.omen is not None or (fingerprint is not None and fingerprint != self.fingerprint):
                add(self.chunk(chunk))
                opening = None
                continue
            if opening is None:
                opening = (self._head or self._start()) + _CHOICE
            add(opening)  # the pieces are joined once, at the end
            add(dumps(delta))
            if reason is None:
                add(_NO_FINISH_END)
            else:
                add(_FINISH)
                add(dumps(reason))
                add(b"}]}\n\n")
        return b"".join(out)

    def usage(self, usage: Usage, omen: dict[str, Any] | None = None) -> bytes:
        """The include_usage chunk; ``omen`` says what it cost and whether the counts are estimates."""
        frame = self._start() + b',"choices":[],"usage":' + jsonutil.dumps(usage.to_openai())
        if omen is not None:
            frame += b',"omen":' + jsonutil.dumps(omen)
        return frame + b"}\n\n"

    def error(self, err: OmenError) -> bytes:
        """An error frame: the OpenAI SDK raises APIError on it; no [DONE] follows."""
        return b"data: " + jsonutil.dumps(err.body()) + b"\n\n"
