"""The incremental SSE decoder: events complete whatever way the bytes are split."""

from __future__ import annotations

import pytest

from omen_local.providers._sse import Decoder, SSEEvent

STREAM = (
    b": keep-alive comment\n\n"
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b"data: line one\r\ndata: line two\r\n\r\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("message_start", '{"a": 1}'),
    SSEEvent("message", "line one\nline two"),
    SSEEvent("message", "[DONE]"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
def test_any_split_gives_the_same_events(size: int) -> None:
    decoder = Decoder()
    events: list[SSEEvent] = []
    for i in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[i : i + size])
    events += decoder.close()
    assert events == EXPECTED


def test_an_event_is_returned_by_the_read_that_completes_it() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.feed(b"\ndata: y") == [SSEEvent("message", "x")]
    assert decoder.close() == [SSEEvent("message", "y")]  # a stream cut before its blank line
