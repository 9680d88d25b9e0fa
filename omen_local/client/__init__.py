"""The OMEN client kit: find the local OMEN, hint, stream, and fall back to local Ollama.

Light on purpose (httpx2 and the standard library; no Qt, no server code): editors, agents
and scripts import it. The tool loop through Glyph lives in ``omen_local.client.tools``
(it needs the ``mcp`` SDK, so it is imported only when used). See docs/clients.md.
"""

from __future__ import annotations

from .aio import AsyncChatStream, AsyncOmenClient
from .answer import (
    Answer,
    Done,
    Event,
    Route,
    Started,
    Swap,
    SwapEvent,
    TextDelta,
    ToolCall,
    ToolCallStarted,
    Usage,
)
from .errors import APIError, OmenClientError, ProtocolError, StreamInterrupted, Unavailable
from .hints import Hints, Unhonoured
from .sync import ChatStream, OmenClient

__all__ = [
    "APIError",
    "Answer",
    "AsyncChatStream",
    "AsyncOmenClient",
    "ChatStream",
    "Done",
    "Event",
    "Hints",
    "OmenClient",
    "OmenClientError",
    "ProtocolError",
    "Route",
    "Started",
    "StreamInterrupted",
    "Swap",
    "SwapEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallStarted",
    "Unavailable",
    "Unhonoured",
    "Usage",
]
