"""Scriptable fake upstreams: real aiohttp servers on 127.0.0.1 that record what they saw.

A test queues :class:`Reply` scripts; each request takes the next one (or the default).
``closed_at`` records when the server saw a request's connection go away, so tests can
check that OMEN cancels upstream work promptly.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.waiting import DEADLINE_S


@dataclass
class Reply:
    text: str = "Hello from the fake upstream."
    pieces: int = 3  # how many content deltas the text is streamed in
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)
    status: int | None = None  # an HTTP error status instead of an answer
    error_message: str = "fake upstream error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the response starts
    chunk_delay_s: float = 0.0  # between streamed pieces
    fail_after: int | None = None  # stream: send N content pieces, then an in-stream error
    cut_after: int | None = None  # stream: send N content pieces, then drop the connection
    hang: bool = False  # never answer (disconnect tests)
    drop: bool = False  # close the connection without answering (a restarting worker)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int = 0
    finish_reason: str = "stop"
    model: str | None = None  # the model the upstream says answered
    raw_body: Any = None  # answer this JSON verbatim (non-streamed), however wrong
    raw_frames: list[bytes] | None = None  # stream these bytes verbatim after the headers


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    started: float
    closed_at: float | None = None
    finished: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    first_byte_at: float | None = None  # when the first content piece was written


class FakeServer:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.by_model: dict[str, list[Reply]] = {}
        self.default = Reply()
        self.seen: list[Seen] = []
        self.url = ""
        self.bind = ("127.0.0.1", 0)  # where __aenter__ listens (a port of its own by default)
        self.ssl: ssl.SSLContext | None = None  # serve HTTPS with this (tests/conftest.py: a test CA's)
        self._runner: web.AppRunner | None = None

    def queue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def queue_for(self, model: str, *replies: Reply) -> None:
        """Script replies for requests naming ``model`` (checked before the general queue)."""
        self.by_model.setdefault(model, []).extend(replies)

    def next_reply(self, model: str | None = None) -> Reply:
        own = self.by_model.get(model or "")
        if own:
            return own.pop(0)
        return self.script.pop(0) if self.script else self.default

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> FakeServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, *self.bind, ssl_context=self.ssl)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self.ssl else 'http'}://{self.bind[0]}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def record(self, request: web.Request) -> Seen:
        body = await request.json() if request.can_read_body else None
        seen = Seen(request.path, dict(request.headers), body, time.perf_counter())
        self.seen.append(seen)
        return seen

    async def wait_closed(self, seen: Seen) -> float:
        """Wait until the server saw ``seen``'s connection close; return when (the deadline
        only bounds a failure: a test that needs "at once" compares the time returned)."""
        try:
            async with asyncio.timeout(DEADLINE_S):
                await seen.closed.wait()
        except TimeoutError:
            raise AssertionError("the upstream connection was never closed") from None
        assert seen.closed_at is not None
        return seen.closed_at


def split(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` roughly equal, non-empty parts."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size = -(-len(text) // pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


def drop(request: web.Request) -> web.Response:
    """Close the connection under the request: the client sees the server disconnect."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def guarded(seen: Seen, work: Any) -> Any:
    """Run a handler body; record when the client (OMEN) went away."""
    try:
        result = await work
        seen.finished = True
        return result
    except (asyncio.CancelledError, ConnectionResetError):
        seen.closed_at = time.perf_counter()
        seen.closed.set()
        raise


def fake_vector(text: str, dims: int = 8) -> list[float]:
    """A deterministic embedding for ``text``: float32-exact values in [-1, 1)."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < 2 * dims:
        digest += hashlib.sha256(digest).digest()
    return [struct.unpack("<h", digest[2 * i : 2 * i + 2])[0] / 32768 for i in range(dims)]
