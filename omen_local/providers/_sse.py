"""A Server-Sent Events decoder (the WHATWG framing) over a stream of lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


async def decode(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Yield one event per blank-line-terminated block; comments and ids are skipped."""
    event = ""
    data: list[str] = []
    async for raw in lines:
        if not raw:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield SSEEvent(event or "message", "\n".join(data))
