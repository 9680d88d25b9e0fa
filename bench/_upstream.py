"""A fast fake OpenAI upstream for the overhead benchmark: asyncio Protocol + uvloop.

It answers ``POST .../chat/completions`` with a canned ``chat.completion`` (Content-Length)
or, when the body asks for ``"stream": true``, a canned SSE stream (chunked: a role
chunk, three content chunks, a finish chunk, the usage chunk, ``data: [DONE]``). It
keeps connections alive and does no other work, so it is never the bottleneck.

Run: ``python bench/_upstream.py [--port N]``; it prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from typing import Any, cast

MODEL = "gpt-4o-mini"
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
TEXT_PARTS = ("Hello there,", " nice to", " meet you.")


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


def _plain(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def _chunked(frames: list[bytes]) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames)
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


TEXT_PLAIN, TEXT_STREAM, EMBEDDINGS = _plain(text_completion_body()), _chunked(text_stream_frames()), _plain(embeddings_body())


def _responses() -> tuple[bytes, bytes, bytes]:
    body = completion_body()
    plain = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in stream_frames())
    stream = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    missing = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    return plain, stream, missing


PLAIN, STREAM, NOT_FOUND = _responses()
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def wants_stream(body: bytes) -> bool:
    """True if a JSON body sets ``"stream": true`` (compact or spaced, as clients write it)."""
    return b'"stream":true' in body or b'"stream": true' in body


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
            if head.startswith(b"post ") and b"/chat/completions " in line:
                transport.write(STREAM if wants_stream(body) else PLAIN)
            elif head.startswith(b"post ") and b"/completions " in line:
                transport.write(TEXT_STREAM if wants_stream(body) else TEXT_PLAIN)
            elif head.startswith(b"post ") and b"/embeddings " in line:
                transport.write(EMBEDDINGS)
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
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
