"""A Server-Sent Events decoder (the WHATWG framing).

:class:`Decoder` is fed whatever bytes arrived and returns the events they complete, so
an adapter can handle one network read at a time (and OMEN can write the frames of one
read with one write). :func:`decode` is the same over an async stream of lines.

Every upstream OMEN streams from frames its events the same way (``data: {...}`` and a
blank line, ``\\n`` line ends, perhaps an ``event:`` line first), so a read is split at
the blank lines and such events are taken whole; anything else (``\\r\\n`` line ends,
comments, several ``data`` lines, an event cut across reads) goes through the line
parser. Both give the same events, whatever way the bytes are split.

One field beyond the standard: llama.cpp's server reports a failed stream as an
``error: {...}`` line (then ``data: [DONE]``), which a standard parser would drop; it
comes out as an event named ``error`` so the adapter can tell the client why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


MAX_EVENT = 1 << 20  # an event (or the part of one held) longer than this is not a streamed chunk


class EventTooLong(ValueError):
    """The upstream sent more than MAX_EVENT bytes without ending an event: memory stays bounded."""


_DATA = b"data: "
_EVENT = b"event: "
_SEP = b"\n\ndata: "
_DONE_TAIL = b"\n\ndata: [DONE]"


@dataclass(slots=True)
class Decoder:
    """Incremental SSE parser: ``feed`` bytes, get the events completed so far.

    ``feed_raw`` returns ``(event name, data bytes)`` pairs, for adapters that hand the
    data straight to a JSON parser; ``feed`` returns :class:`SSEEvent` with text.
    """

    _tail: bytes = b""  # bytes after the last complete event (fast path) or line (line parser)
    _event: str = ""
    _data: list[bytes] = field(default_factory=list)
    _open: bool = False  # the line parser holds part of an event (an event or data line seen)
    _held: int = 0  # bytes of data lines the line parser holds for the open event

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return [SSEEvent(name, data.decode("utf-8", "replace")) for name, data in self.feed_raw(chunk)]

    def data_array(self, block: bytes) -> tuple[bytes, bool, int] | None:
        """A read of nothing but whole ``data: <json>`` events as one JSON array of their data
        (so one parse covers them all), whether it ends with ``data: [DONE]``, and how many
        events the array holds; None when the read is anything else (or the decoder holds
        part of an event): use :meth:`feed_raw`.

        Such data holds no newline, so every newline of the read is in an event separator.
        The caller must check that the array parses to that many items: an event's data
        such as ``{"a":1},{"b":2}`` would otherwise pass as two events.
        """
        # (find, not ``in``: ``bytes in bytes`` first tries the needle as an integer and
        # formats a TypeError before it searches; this runs on every read)
        if self._tail or self._open or not block.startswith(_DATA) or not block.endswith(b"\n\n") or block.find(b"\r") >= 0:
            return None
        body = block[6:-2]
        done = body.endswith(_DONE_TAIL)
        if done:
            body = body[: -len(_DONE_TAIL)]
        elif body == b"[DONE]":
            return b"[]", True, 0
        events = body.count(_SEP)
        if not body or body.count(b"\n") != 2 * events:
            return None
        return b"[" + body.replace(_SEP, b",") + b"]", done, events + 1

    def close(self) -> list[SSEEvent]:
        """The events a stream that ended without its final blank line still completes."""
        return [SSEEvent(name, data.decode("utf-8", "replace")) for name, data in self.close_raw()]

    def feed_raw(self, chunk: bytes) -> list[tuple[str, bytes]]:
        buf = self._tail + chunk if self._tail else chunk
        if self._open or buf.find(b"\r") >= 0:  # find, not ``in``: see data_array
            out, self._tail = self._lines(buf)
            if len(self._tail) > MAX_EVENT:
                raise EventTooLong(f"a line of more than {MAX_EVENT} bytes")
            return out
        parts = buf.split(b"\n\n")
        self._tail = parts.pop()  # an incomplete event waits for more bytes
        if len(self._tail) > MAX_EVENT:
            raise EventTooLong(f"an event of more than {MAX_EVENT} bytes")
        out = []
        for part in parts:
            if part.startswith(_DATA) and part.find(b"\n") < 0:
                out.append(("message", part[6:]))
            elif part.startswith(_EVENT) and part.count(b"\n") == 1 and part.find(b"\ndata: ") >= 0:
                name, _, line = part.partition(b"\n")
                out.append((name[7:].decode("utf-8", "replace") or "message", line[6:]))
            elif part:
                out += self._lines(part + b"\n\n")[0]
        return out

    def close_raw(self) -> list[tuple[str, bytes]]:
        tail, self._tail = self._tail, b""
        out = self._lines(tail + b"\n")[0] if tail else []  # a last line without its line end counts
        if self._data:
            out.append((self._event or "message", b"\n".join(self._data)))
        self._event, self._data, self._open, self._held = "", [], False, 0
        return out

    def _lines(self, buf: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
        """The line parser over every complete line of ``buf``: (events, the incomplete last line)."""
        lines = buf.split(b"\n")
        tail = lines.pop()
        out: list[tuple[str, bytes]] = []
        for raw in lines:
            event = self._line(raw[:-1] if raw.endswith(b"\r") else raw)
            if event is not None:
                out.append(event)
        return out, tail

    def _line(self, line: bytes) -> tuple[str, bytes] | None:
        if not line:
            done = (self._event or "message", b"\n".join(self._data)) if self._data else None
            self._event, self._data, self._open, self._held = "", [], False, 0
            return done
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._held += len(line) + 1  # as sent: many short lines count too
            if self._held > MAX_EVENT:
                raise EventTooLong(f"an event of more than {MAX_EVENT} bytes")
            self._data.append(value)
            self._open = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
            self._open = True
        elif name == b"error":  # llama.cpp's server: ``error: {...}`` (see the module's docstring)
            self._held += len(line) + 1
            if self._held > MAX_EVENT:
                raise EventTooLong(f"an event of more than {MAX_EVENT} bytes")
            self._event = "error"
            self._data.append(value)
            self._open = True
        return None


async def decode(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Yield one event per blank-line-terminated block; comments and ids are skipped."""
    decoder = Decoder()
    async for raw in lines:
        for event in decoder.feed(raw + b"\n"):
            yield event
    for event in decoder.close():
        yield event
