"""A lean HTTP/1.1 client for plain-HTTP upstreams (local model servers), keep-alive pooled.

Why it exists: aiohttp's ClientSession costs about 140 us of CPU per request on the
benchmark machine (a request object, header multidicts, cookie and tracing hooks,
several timers, a response object with its own streams), more than all of OMEN's routing
and metering together; a POST of a JSON body and the read of its answer need a fraction
of that. It serves only what the adapters send: ``http://`` URLs without a proxy
(Ollama, LM Studio, vLLM, llama.cpp on this machine or the LAN); TLS, proxies and GETs
stay with aiohttp (``providers/_http.py`` picks).

What it does: one ``transport.write`` per request (headers and body), responses framed by
Content-Length, chunked encoding (its framing read by llhttp, see ``_Dechunker``) or the
connection's end, gzip/deflate bodies decoded
(it does not ask for compression), the connect / idle-read / total timeouts of
``Timeouts``, flow control (reading pauses while 256 KB wait unread). A connection
returns to its pool only when its response was read to the end and neither side said
``Connection: close``; closing a response early closes its connection, so the upstream
stops generating at once. Failures are ``OSError`` subclasses (``H1ConnectError`` when
no connection could be made) or ``TimeoutError``, which ``_http.translate`` maps like
aiohttp's. Nothing is retried: a request is sent at most once.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Callable
from typing import Any

import httptools
from yarl import URL

MAX_HEAD = 64 * 1024  # status line and headers
MAX_HEADERS = 200
HIGH_WATER = 256 * 1024  # unread body bytes at which reading pauses


_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


class _Dechunker:
    """Chunked framing (RFC 9112 §7.1) read by llhttp, through httptools.

    Why not Python: upstreams send one SSE event per HTTP chunk, and a Python loop over
    size lines cost about 10k instructions per chunk, a third of what OMEN spent per
    streamed event; llhttp hands each chunk's data straight to ``on_body`` (a C
    ``list.append`` when the body is not compressed). The parser is fed a fixed head, then
    the body's bytes. It is strict: a size is hex digits (no sign, ``0x`` or ``_``, at most
    64 bits), blanks are allowed only between a size and its ``;extensions``, and the data
    must end with CRLF; trailers are read and dropped. llhttp keeps no framing bytes, so the
    64 KB bound on framing without data (an endless extension or trailer) is ``Response._feed``'s.
    """

    __slots__ = ("_parser", "ended", "on_body")

    def __init__(self, on_body: Callable[[bytes], object]) -> None:
        self.on_body = on_body  # llhttp looks the callbacks up once, when the parser is made
        self.ended = False
        parser = httptools.HttpResponseParser(self)
        parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)  # BWS before ";" (§7.1.1)
        parser.feed_data(_CHUNKED_HEAD)
        self._parser = parser

    def on_message_begin(self) -> None:
        # llhttp reads what follows the body as the next response (a valid head raises
        # nothing, and its body would reach on_body): stop it before it begins.
        if self.ended:
            raise H1Error("the upstream sent more than its response")

    def on_message_complete(self) -> None:
        self.ended = True

    def feed(self, data: bytes) -> bool:
        """Take body bytes; True if bytes followed the end of the body (``ended``)."""
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.ended:
                return True
            if isinstance(exc.__context__, H1Error):  # on_body's own (a body that does not decompress)
                raise exc.__context__ from None
            raise H1Error(f"the upstream broke chunked framing ({exc})") from None
        return False


class H1ConnectError(ConnectionError):
    """No connection to the upstream could be made (refused, unreachable, timed out)."""


class H1Error(ConnectionError):
    """The connection failed or the upstream broke HTTP/1.1 framing."""


class Headers:
    """Response headers, looked up case-insensitively; a repeated name's values are joined
    with ", " (RFC 9110 §5.3), so two Content-Lengths or Transfer-Encodings cannot hide."""

    __slots__ = ("_map",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._map: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            seen = self._map.get(key)
            self._map[key] = value if seen is None else f"{seen}, {value}"

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map


class Response:
    """One response: ``status``, ``reason``, ``headers``, and its body read as it arrives.

    ``content`` is the response itself, so ``resp.content.readany()`` reads like aiohttp's.
    """

    def __init__(self, conn: Connection, status: int, reason: str, headers: Headers, mode: str, length: int) -> None:
        self._conn = conn
        self.status, self.reason, self.headers = status, reason, headers
        self.content = self
        self._mode = mode  # "length" | "chunked" | "eof"
        self._left = length  # body bytes still due (length)
        self._parts: list[bytes] = []  # body bytes not read yet (always this list: llhttp appends to it)
        self._unread = 0
        self.done = False  # the whole body has arrived
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.deadline = float("inf")  # loop time by which the whole body must have arrived
        self._decoder: Any = None
        encoding = (headers.get("content-encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("", "identity"):
            raise H1Error(f"the upstream sent a body encoded as {encoding!r}, which was not asked for")
        self._dechunker: _Dechunker | None = None
        self._framing = 0  # chunked: bytes fed since the last data llhttp passed on
        if mode == "chunked":
            self._dechunker = _Dechunker(self._parts.append if self._decoder is None else self._deliver)
        if mode == "length" and length == 0:
            self.done = True

    # ------------------------------------------------------------ fed by the connection

    def _deliver(self, data: bytes) -> None:
        self._framing = 0
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise H1Error(f"the upstream sent a body that does not decompress ({exc})") from None
        if data:
            self._parts.append(data)
            self._unread += len(data)

    def _feed(self, data: bytes) -> bytes:
        """Take body bytes; return what lies past the end of this response (none expected)."""
        dechunker = self._dechunker
        if dechunker is not None:
            parts = self._parts
            had = len(parts)
            self._framing += len(data)  # back to 0 once data comes through (here, or in _deliver)
            extra = dechunker.feed(data)
            if self._decoder is None and len(parts) > had:  # (a decoded body: _deliver counted it)
                self._unread += len(parts[had]) if len(parts) == had + 1 else sum(map(len, parts[had:]))
                self._framing = 0
            if dechunker.ended:
                self._finish()
                if extra:
                    raise H1Error("the upstream sent more than its response")
                return b""
            if self._framing > MAX_HEAD:  # llhttp keeps no framing, but it must not come forever
                raise H1Error("the upstream sent 64 KB of chunk framing without data (sizes, extensions, trailers)")
        elif self._mode == "eof":
            self._deliver(data)
        else:
            take = data[: self._left]
            self._left -= len(take)
            self._deliver(take)
            if self._left == 0:
                self._finish()
                return data[len(take) :]
        self._wake()
        return b""

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._parts.append(tail)
                self._unread += len(tail)
        self.done = True
        self._conn._response_done(self)
        self._wake()

    def _eof(self, exc: BaseException | None) -> None:
        """The connection ended: the end of an ``eof`` body, else a broken response."""
        if self.done:
            return
        if self._mode == "eof" and exc is None:
            self._finish()
            return
        self._error = exc if exc is not None else H1Error("the upstream closed the connection before the response ended")
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self.done and self._error is None:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ read by the adapters

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        left = self.deadline - loop.time()
        if left <= 0:
            raise TimeoutError("the upstream did not finish its answer in time")
        self._waiter = loop.create_future()
        idle = self._conn.idle_s
        timer = loop.call_later(idle, self._fail_idle) if idle < left else loop.call_later(left, self._fail_late)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _fail_idle(self) -> None:
        self._fail(TimeoutError("the upstream stopped sending"))

    def _fail_late(self) -> None:
        self._fail(TimeoutError("the upstream did not finish its answer in time"))

    def _take(self, limit: int = -1) -> bytes:
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if 0 <= limit < len(data):
            data, rest = data[:limit], data[limit:]
            parts.append(rest)
        self._unread -= len(data)
        if self._unread < HIGH_WATER:
            self._conn.resume()
        return data

    async def readany(self) -> bytes:
        """Whatever body bytes have arrived (waiting for some); b"" once the body ended.

        The total timeout holds even for a reader slower than the upstream (bytes always
        waiting): past the deadline, an unfinished body is a timeout."""
        while True:
            if self._parts:
                if not self.done and asyncio.get_running_loop().time() > self.deadline:
                    raise TimeoutError("the upstream did not finish its answer in time")
                return self._take()
            if self._error is not None:
                raise self._error
            if self.done:
                return b""
            await self._wait()

    async def read(self, n: int = -1) -> bytes:
        """``read()``: the whole body; ``read(n)``: up to ``n`` bytes of what has arrived."""
        if n >= 0:
            while not self._parts and not self.done and self._error is None:
                await self._wait()
            if self._parts:
                return self._take(n)
            if self._error is not None:
                raise self._error
            return b""
        while not self.done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None:
            raise self._error
        return self._take() if self._parts else b""

    def release(self) -> None:
        """Done with the response: its connection is reused if the body was read to the end."""
        self._conn._release(self, reuse=self.done and self._error is None)

    def close(self) -> None:
        """Done early: close the connection (the upstream stops at once)."""
        self._conn._release(self, reuse=False)


class Connection(asyncio.Protocol):
    def __init__(self, pool: H1Pool, key: tuple[str, int], idle_s: float) -> None:
        self.pool, self.key, self.idle_s = pool, key, idle_s
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._head = bytearray()
        self._head_waiter: asyncio.Future[Response] | None = None
        self.response: Response | None = None
        self._paused = False
        self.idle_handle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            response = self.response
            if response is None:
                if self._head_waiter is None:  # bytes nobody asked for (an idle connection)
                    raise H1Error("the upstream sent data without a request")
                head = self._head
                head += data
                pos = 0
                while True:  # interim answers (100 Continue) are skipped in a loop, not recursion
                    end = head.find(b"\r\n\r\n", pos)
                    if end - pos > MAX_HEAD or (end < 0 and len(head) - pos > MAX_HEAD):
                        raise H1Error("the upstream sent headers longer than 64 KB")
                    if end < 0:
                        del head[:pos]
                        return
                    response = self._parse_head(bytes(head[pos:end]))
                    pos = end + 4
                    if not 100 <= response.status < 200:
                        break
                rest = bytes(head[pos:])
                head.clear()
                self.response = response
                waiter, self._head_waiter = self._head_waiter, None
                if not waiter.done():
                    waiter.set_result(response)
                if response.done:
                    if rest.strip():
                        raise H1Error("the upstream sent more than its response")
                    return
                data = rest
                if not data:
                    return
            if response.done:
                if data.strip():
                    raise H1Error("the upstream sent more than its response")
                return
            rest = response._feed(data)
            if rest.strip():
                raise H1Error("the upstream sent more than its response")
            if response._unread >= HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        except Exception as exc:  # broken framing: this connection is done
            self._broken(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        err = H1Error(f"the upstream connection failed: {exc}") if exc is not None else None
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_exception(err or H1Error("the upstream closed the connection without an answer"))
        if self.response is not None:
            self.response._eof(err)

    # ------------------------------------------------------------ the exchange

    def _parse_head(self, head: bytes) -> Response:
        lines = head.split(b"\r\n")
        status_line = lines[0]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
            raise H1Error(f"the upstream did not answer in HTTP/1.1 ({status_line[:60]!r})")
        if len(lines) > MAX_HEADERS + 1:
            raise H1Error("the upstream sent too many headers")
        pairs = []
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip():
                raise H1Error(f"the upstream sent a bad header line {raw[:60]!r}")
            pairs.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        headers = Headers(pairs)
        status = int(parts[1])
        connection = (headers.get("connection") or "").lower()
        if "close" in connection or (parts[0] == b"HTTP/1.0" and "keep-alive" not in connection):
            self.keep_alive = False
        transfer = (headers.get("transfer-encoding") or "").lower()
        length = headers.get("content-length")
        if status in (204, 304) or 100 <= status < 200:
            mode, size = "length", 0
        elif transfer:
            if transfer != "chunked":  # the only coding HTTP/1.1 may use unasked (RFC 9112 §6.1)
                raise H1Error(f"the upstream sent a transfer encoding OMEN cannot read ({transfer[:40]})")
            mode, size = "chunked", 0
            if length is not None:  # both framings: read as chunked, never reuse (RFC 9112 §6.3)
                self.keep_alive = False
        elif length is not None:
            if not (length.isascii() and length.isdigit()):
                raise H1Error(f"the upstream sent a bad Content-Length ({length[:40]})")
            mode, size = "length", int(length)
        else:
            mode, size = "eof", 0
            self.keep_alive = False
        return Response(self, status, parts[2].decode("latin-1") if len(parts) > 2 else "", headers, mode, size)

    def _broken(self, exc: Exception) -> None:
        err = exc if isinstance(exc, OSError) else H1Error(str(exc))
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_exception(err)
        if self.response is not None:
            self.response._fail(err)
        self.close()

    async def send(self, request: bytes, timeout_s: float) -> Response:
        """Write the request; wait for the response's status line and headers."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._head_waiter = waiter
        self.transport.write(request)
        timer = loop.call_later(timeout_s, _timeout, waiter, timeout_s)
        try:
            return await waiter
        except BaseException:
            self.close()  # cancelled or failed before the answer: never reuse
            raise
        finally:
            timer.cancel()

    def _response_done(self, response: Response) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _release(self, response: Response, reuse: bool) -> None:
        if self.response is not response:
            return
        self.response = None
        if reuse and self.keep_alive and not self.closed:
            self.pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.close()


def _timeout(waiter: asyncio.Future[Response], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no answer within {seconds:g} s"))


@functools.lru_cache(maxsize=256)
def _endpoint(url: URL) -> tuple[tuple[str, int], bytes]:
    """(host, port) and the request's start up to the Content-Length value, for ``url``."""
    host, port = url.raw_host or "", url.port or 80
    shown = f"[{host}]" if ":" in host else host
    if port != 80:
        shown = f"{shown}:{port}"
    start = f"POST {url.raw_path_qs or '/'} HTTP/1.1\r\nHost: {shown}\r\nContent-Length: "
    return (host, port), start.encode("latin-1")


class H1Pool:
    """Idle keep-alive connections per (host, port), newest reused first."""

    def __init__(self, keepalive_s: float = 30.0) -> None:
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._closed = False

    def _put(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
            return
        self._idle.setdefault(conn.key, []).append(conn)
        loop = asyncio.get_running_loop()
        if conn.idle_handle is not None:
            conn.idle_handle.cancel()
        conn.idle_handle = loop.call_later(self.keepalive_s, conn.close)

    def _forget(self, conn: Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
        if conn.idle_handle is not None:
            conn.idle_handle.cancel()
            conn.idle_handle = None

    async def _connect(self, key: tuple[str, int], connect_s: float, idle_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], Connection] = lambda: Connection(self, key, idle_s)  # noqa: E731
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(factory, key[0], key[1])
        except TimeoutError:
            raise TimeoutError(f"cannot connect to {key[0]}:{key[1]} within {connect_s:g} s") from None
        except OSError as exc:
            raise H1ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc.strerror or exc}") from None
        return conn

    async def post(
        self, url: URL, headers: bytes, body: bytes, *, connect_s: float, idle_s: float, total_s: float
    ) -> Response:
        """Send ``POST url`` with the prepared header lines (``Name: value\\r\\n`` each) and body."""
        deadline = asyncio.get_running_loop().time() + total_s  # connecting and waiting count too
        key, start = _endpoint(url)
        idle = self._idle.get(key)
        conn = None
        while idle:
            candidate = idle.pop()
            if candidate.idle_handle is not None:
                candidate.idle_handle.cancel()
                candidate.idle_handle = None
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            conn = await self._connect(key, connect_s, idle_s)
        conn.idle_s = idle_s
        request = b"".join((start, str(len(body)).encode(), b"\r\n", headers, b"\r\n", body))
        response = await conn.send(request, min(idle_s, max(0.0, deadline - asyncio.get_running_loop().time())))
        response.deadline = deadline
        return response

    def close(self) -> None:
        """Close every idle connection (responses in use close when released)."""
        self._closed = True
        for conns in list(self._idle.values()):
            for conn in list(conns):
                conn.close()
        self._idle.clear()
