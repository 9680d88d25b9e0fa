"""The incremental SSE decoder: events complete whatever way the bytes are split."""

from __future__ import annotations

import pytest

from omen_local.providers._sse import MAX_EVENT, Decoder, EventTooLong, SSEEvent

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


class LineByLine:
    """The reference: the WHATWG line parser, one line at a time (what the decoder's fast path must match)."""

    def __init__(self) -> None:
        self.tail, self.event, self.data = b"", "", []  # type: ignore[var-annotated]

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            done = SSEEvent(self.event or "message", "\n".join(self.data)) if self.data else None
            self.event, self.data = "", []
            return done
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        return None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        lines = (self.tail + chunk).split(b"\n")
        self.tail = lines.pop()
        return [e for raw in lines if (e := self._line(raw.rstrip(b"\r"))) is not None]

    def close(self) -> list[SSEEvent]:
        out = [e for e in [self._line(self.tail.rstrip(b"\r"))] if e is not None] if self.tail else []
        self.tail = b""
        if self.data:
            out.append(SSEEvent(self.event or "message", "\n".join(self.data)))
        return out


PIECES = [
    b'data: {"x": 1}\n\n',
    b"event: ping\ndata: {}\n\n",
    b"event: \ndata: empty name\n\n",
    b": comment\n\n",
    b"data: one\ndata: two\n\n",
    b"data: crlf\r\n\r\n",
    b"data:no space\n\n",
    b"data\n\n",
    b"id: 7\nretry: 10\ndata: with id\n\n",
    b"\n\n\n",
    b"data: [DONE]\n\n",
    "data: caf\u00e9 \u2603\n\n".encode(),
    b"data: bad \xff utf-8\n\n",
    b"event: a\nevent: b\ndata: last name wins\n\n",
]


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_matches_the_line_parser_on_any_mix_and_split(seed: int) -> None:
    import random

    rng = random.Random(seed)
    stream = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30)))
    if rng.random() < 0.3:
        stream += rng.choice([b"data: cut", b"data: cut\n", b"data: a\ndata: b", b"event: x\ndata: y\n"])
    reference, decoder = LineByLine(), Decoder()
    expected: list[SSEEvent] = []
    got: list[SSEEvent] = []
    at = 0
    while at < len(stream):
        size = rng.choice([1, 2, 3, 5, 8, 13, 64, 4096])
        piece = stream[at : at + size]
        at += size
        expected += reference.feed(piece)
        got += decoder.feed(piece)
        assert got == expected  # an event comes back from the read that completes it, not later
    assert got + decoder.close() == expected + reference.close()


def test_raw_events_keep_the_bytes_for_the_json_parser() -> None:
    decoder = Decoder()
    assert decoder.feed_raw(b'data: {"a":"\xc3\xa9"}\n\nevent: error\ndata: {}\n\ndata: x') == [
        ("message", b'{"a":"\xc3\xa9"}'),
        ("error", b"{}"),
    ]
    assert decoder.close_raw() == [("message", b"x")]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b'data: {"a":1}\n\ndata: {"b":2}\n\n', (b'[{"a":1},{"b":2}]', False, 2)),
        (b'data: {"a":1}\n\ndata: [DONE]\n\n', (b'[{"a":1}]', True, 1)),
        (b"data: [DONE]\n\n", (b"[]", True, 0)),
        (b'data: {"a":1}\n\n', (b'[{"a":1}]', False, 1)),
        (b'data: {"a":1}\n\ndata: {"b"', None),  # an event cut at the end of the read
        (b'event: x\ndata: {"a":1}\n\n', None),
        (b'data: {"a":1}\r\n\r\n', None),
        (b'data: {"a":\n\n', (b'[{"a":]', False, 1)),  # framing only: the JSON parser refuses it
        (b'data: {"a":1},{"b":2}\n\n', (b'[{"a":1},{"b":2}]', False, 1)),  # one event, two values: the count tells
        (b'data: {"a":1}\ndata: {"b":2}\n\n', None),  # two data lines make one event
        (b": ping\n\ndata: {}\n\n", None),
        (b"data: \n\n", None),
    ],
)
def test_reads_of_whole_data_events_become_one_json_array(block: bytes, expected: tuple[bytes, bool, int] | None) -> None:
    assert Decoder().data_array(block) == expected


def test_no_array_while_the_decoder_holds_part_of_an_event() -> None:
    decoder = Decoder()
    assert decoder.feed_raw(b'data: {"a"') == []
    assert decoder.data_array(b'data: {"b":1}\n\n') is None


@pytest.mark.parametrize(
    "piece",
    [
        b"x" * 65536,  # one endless line (fast path)
        b"data: x\n" * 8192,  # data lines, never a blank one (fast path's held event)
        b"data: x\r\n" * 8192,  # the same with CRLF (line parser)
    ],
)
def test_an_event_that_never_ends_is_refused_once_past_the_limit(piece: bytes) -> None:
    """An upstream that streams without ending an event must not grow OMEN's memory for ever."""
    decoder = Decoder()
    decoder.feed_raw(b"data: ")
    with pytest.raises(EventTooLong):
        for _ in range(3 * MAX_EVENT // len(piece) + 1):
            decoder.feed_raw(piece)


def test_events_up_to_the_limit_still_decode() -> None:
    big = b"y" * (MAX_EVENT - 16)
    decoder = Decoder()
    got = decoder.feed_raw(b"data: " + big[: MAX_EVENT // 2]) + decoder.feed_raw(big[MAX_EVENT // 2 :] + b"\n\n")
    assert got == [("message", big)]
    line = Decoder()
    assert line.feed_raw(b"data: " + big + b"\r\n\r\n") == [("message", big)]
