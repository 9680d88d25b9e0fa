"""A fast fake upstream for the benchmarks: asyncio Protocol + uvloop, canned answers.

It answers ``POST .../chat/completions`` with a canned ``chat.completion`` (Content-Length)
or, when the body asks for ``"stream": true``, a canned SSE stream (chunked: a role
chunk, N content chunks (3 unless ``--chunks N``), a finish chunk, the usage chunk,
``data: [DONE]``, all in one write). The same server speaks two other wire formats, so
OMEN's translating adapters can be measured against the same upstream:

* ``POST /v1/messages``: Anthropic's Messages API, a ``message`` or, streamed, Anthropic's
  SSE events (``message_start``, ``content_block_start``, ``ping``, N
  ``content_block_delta``, ``content_block_stop``, ``message_delta``, ``message_stop``);
* ``POST /api/chat``: Ollama's chat API, one JSON object or, streamed, NDJSON lines
  (N content lines, then the ``done`` line with the counts).

It counts the requests it answered that carry an ``x-bench-from: <name>`` header, per name
(``GET /stats`` returns them as JSON), so a benchmark can check that the usage OMEN
metered matches what the upstream saw. It keeps connections alive and does no other
work, so it is never the bottleneck.

Run: ``python bench/_upstream.py [--port N] [--chunks N]``; prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from typing import Any, cast

MODEL = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
LLAMA = "llama3.2"
_ID = "chatcmpl-bench0000000000000000000000"
_CREATED = 1_700_000_000
_USAGE = {
    "prompt_tokens": 21,
    "completion_tokens": 9,
    "total_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
THREE_PARTS = ("Hello there,", " nice to", " meet you.")


def text_parts(n: int) -> tuple[str, ...]:
    """``n`` content pieces: the classic three, or as many short words."""
    if n == 3:
        return THREE_PARTS
    return tuple(("Hello" if i == 0 else f" word{i}") for i in range(n))


TEXT_PARTS = THREE_PARTS  # set by build()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def completion_body() -> bytes:
    """The canned non-streamed answer, as OpenAI's API reference shapes it."""
    return _dumps(
        {
            "id": _ID,
            "object": "chat.completion",
            "created": _CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(TEXT_PARTS),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }
    )


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def stream_frames() -> list[bytes]:
    """The canned SSE frames: role, content parts, finish, usage, [DONE]."""
    events: list[dict[str, Any]] = [
        _chunk({"role": "assistant", "content": "", "refusal": None}, None)
    ]
    events += [_chunk({"content": part}, None) for part in TEXT_PARTS]
    events.append(_chunk({}, "stop"))
    usage = _chunk({}, None)
    usage["choices"] = []
    usage["usage"] = _USAGE
    events.append(usage)
    return [b"data: " + _dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def text_completion_body() -> bytes:
    """The canned legacy completion (``/v1/completions``)."""
    choice = {"text": "".join(TEXT_PARTS), "index": 0, "logprobs": None, "finish_reason": "stop"}
    usage = {k: _USAGE[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return _dumps({"id": "cmpl-bench", "object": "text_completion", "created": _CREATED, "model": MODEL, "choices": [choice], "usage": usage})


def text_stream_frames() -> list[bytes]:
    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return {"id": "cmpl-bench", "object": "text_completion", "created": _CREATED, "model": MODEL, "choices": [choice]}

    events = [chunk(part, None) for part in TEXT_PARTS] + [chunk("", "stop")]
    usage = chunk("", None)
    usage["choices"] = []
    usage["usage"] = {k: _USAGE[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    events.append(usage)
    return [b"data: " + _dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def embeddings_body() -> bytes:
    vector = [round(0.001 * i, 3) for i in range(384)]
    return _dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 6, "total_tokens": 6},
        }
    )


# ---------------------------------------------------------------- Anthropic Messages API


def anthropic_message_body() -> bytes:
    """A canned ``message``, as Anthropic's API reference shapes it."""
    return _dumps(
        {
            "id": "msg_bench0000000000000000",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE,
            "content": [{"type": "text", "text": "".join(TEXT_PARTS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 9},
        }
    )


def anthropic_stream_frames() -> list[bytes]:
    """Anthropic's streamed events for the same text (docs: "Streaming Messages")."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench0000000000000000",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": CLAUDE,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1},
        },
    }
    frames = [
        event("message_start", start),
        event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {"type": "ping"}),
    ]
    frames += [
        event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}})
        for part in TEXT_PARTS
    ]
    frames += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 9}},
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return frames


# ---------------------------------------------------------------- Ollama chat API

_OLLAMA_AT = "2023-11-14T22:13:20.000000000Z"


def _ollama_done(content: str) -> dict[str, object]:
    """Ollama's last object: the message (whole, or empty after a stream) and the counts."""
    return {
        "model": LLAMA,
        "created_at": _OLLAMA_AT,
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 5_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 21,
        "prompt_eval_duration": 1_000_000,
        "eval_count": 9,
        "eval_duration": 3_000_000,
    }


def ollama_chat_body() -> bytes:
    return _dumps(_ollama_done("".join(TEXT_PARTS)))


def ollama_stream_lines() -> list[bytes]:
    """Ollama's NDJSON stream: one line per piece, then the ``done`` line with the counts."""
    lines = [
        _dumps({"model": LLAMA, "created_at": _OLLAMA_AT, "message": {"role": "assistant", "content": part}, "done": False}) + b"\n"
        for part in TEXT_PARTS
    ]
    done = _dumps(_ollama_done(""))
    return [*lines, done + b"\n"]


def _plain(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def _chunked(frames: list[bytes], content_type: bytes = b"text/event-stream") -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
# (plain answer, streamed answer) per path; build() fills them in.
ANSWERS: dict[str, tuple[bytes, bytes]] = {}
PLAIN = STREAM = b""


def build(chunks: int = 3) -> None:
    """Make every canned answer with ``chunks`` content pieces per stream."""
    global TEXT_PARTS, PLAIN, STREAM
    TEXT_PARTS = text_parts(chunks)
    PLAIN, STREAM = _plain(completion_body()), _chunked(stream_frames())
    ANSWERS.clear()
    ANSWERS.update(
        {
            "chat": (PLAIN, STREAM),
            "text": (_plain(text_completion_body()), _chunked(text_stream_frames())),
            "embeddings": (_plain(embeddings_body()), _plain(embeddings_body())),
            "anthropic": (_plain(anthropic_message_body()), _chunked(anthropic_stream_frames())),
            "ollama": (_plain(ollama_chat_body()), _chunked(ollama_stream_lines(), b"application/x-ndjson")),
        }
    )


build()


def wants_stream(body: bytes) -> bool:
    """True if a JSON body sets ``"stream": true`` (compact or spaced, as clients write it)."""
    return b'"stream":true' in body or b'"stream": true' in body


def route(line: bytes) -> str | None:
    """Which canned answer a request line (lower-cased) gets."""
    if not line.startswith(b"post "):
        return None
    if b"/chat/completions " in line:
        return "chat"
    if b"/completions " in line:
        return "text"
    if b"/embeddings " in line:
        return "embeddings"
    if b"/messages " in line:
        return "anthropic"
    if b"/api/chat " in line:
        return "ollama"
    return None


STATS: dict[str, int] = {}  # x-bench-from name -> requests answered


def _stats() -> bytes:
    return _plain(_dumps(STATS))


def _count(head: bytes) -> None:
    at = head.find(b"\r\nx-bench-from:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        name = head[at + 15 : stop if stop >= 0 else len(head)].strip().decode(errors="replace")
        STATS[name] = STATS.get(name, 0) + 1


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; handles pipelined requests in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        transport = self.transport
        assert transport is not None
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                try:
                    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                except ValueError:
                    transport.write(BAD)
                    transport.close()
                    return
            elif b"\r\ntransfer-encoding:" in head:
                transport.write(BAD)  # chunked request bodies are not needed here
                transport.close()
                return
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            line = head[: head.find(b"\r\n")]
            kind = route(line)
            if kind is not None:
                _count(head)
                plain, stream = ANSWERS[kind]
                transport.write(stream if wants_stream(body) else plain)
            elif line.startswith(b"get /stats "):
                transport.write(_stats())
            else:
                transport.write(NOT_FOUND)
            if b"\r\nconnection: close" in head:
                transport.close()
                return
        self.buf = buf


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=3, help="content chunks per stream (default 3)")
    args = parser.parse_args()
    build(max(1, args.chunks))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
