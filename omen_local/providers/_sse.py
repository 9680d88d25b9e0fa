"""A Server-Sent Events decoder (the WHATWG framing).

:class:`Decoder` is fed whatever bytes arrived and returns the events they complete, so
an adapter can handle one network read at a time (and OMEN can write the frames of one
read with one write). :func:`decode` is the same over an async stream of lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


@dataclass(slots=True)
class Decoder:
    """Incremental SSE parser: ``feed`` bytes, get the events completed so far."""

    _tail: bytes = b""
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._tail + chunk
        lines = buf.split(b"\n")
        self._tail = lines.pop()  # an incomplete last line waits for more bytes
        out: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r"))
            if event is not None:
                out.append(event)
        return out

    def close(self) -> list[SSEEvent]:
        """The events a stream that ended without its final blank line still completes."""
        out: list[SSEEvent] = []
        if self._tail:
            event = self._line(self._tail.rstrip(b"\r"))
            self._tail = b""
            if event is not None:
                out.append(event)
        if self._data:
            out.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
        return out

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            done = SSEEvent(self._event or "message", "\n".join(self._data)) if self._data else None
            self._event, self._data = "", []
            return done
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


async def decode(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Yield one event per blank-line-terminated block; comments and ids are skipped."""
    decoder = Decoder()
    async for raw in lines:
        for event in decoder.feed(raw + b"\n"):
            yield event
    for event in decoder.close():
        yield event
