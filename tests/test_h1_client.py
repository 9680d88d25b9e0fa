"""The lean HTTP/1.1 client (providers/_h1.py) against a server that sends exact bytes.

Every test that runs OmenService over the fakes also goes through it (they are plain HTTP
on loopback); these pin down framing, keep-alive, early close, timeouts and errors.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from yarl import URL

from omen_local.config import ProviderConfig
from omen_local.providers import _http
from omen_local.providers._h1 import H1ConnectError, H1Error, H1Pool
from omen_local.providers.base import Timeouts
from omen_local.providers.errors import ConnectFailed, HTTPStatusError, StreamBroken
from omen_local.providers.openai_compat import OpenAICompatProvider

Script = Callable[[bytes], list[bytes]]  # request bytes -> pieces written apart (b"": close there)


class Scripted:
    """A TCP server that answers each request with the next script; records what it saw."""

    def __init__(self) -> None:
        self.scripts: list[Script | None] = []  # None: close the connection without answering
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                script = self.scripts.pop(0) if self.scripts else (lambda r: [ok(b"{}")])
                if script is None:
                    writer.close()
                    return
                for piece in script(request):
                    if not piece:  # b"": close the connection here
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()

    @property
    def url(self) -> URL:
        assert self.server is not None
        return URL(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x")


GZ_HELLO = gzip.compress(b"hello")


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(*pieces: bytes, extra: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n" % extra + body


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    s = Scripted()
    s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    async with s.server:
        yield s


async def post(pool: H1Pool, url: URL, *, idle: float = 5.0, total: float = 30.0) -> _http.H1Response:
    return await pool.post(url, b"Content-Type: application/json\r\n", b'{"a":1}', connect_s=2, idle_s=idle, total_s=total)


async def test_content_length_answer_and_keep_alive_reuse(server: Scripted) -> None:
    pool = H1Pool()
    for _ in range(3):
        resp = await post(pool, server.url)
        assert resp.status == 200 and resp.headers.get("content-type") == "application/json"
        assert resp.headers.get("CONTENT-LENGTH") == "2"
        assert await resp.read() == b"{}"
        resp.release()
    assert server.connections == 1  # one connection, reused
    assert server.requests[0].startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert server.requests[0].endswith(b'Content-Length: 7\r\nContent-Type: application/json\r\n\r\n{"a":1}')
    pool.close()


@pytest.mark.parametrize("step", [1, 2, 5, 64, 100000])
async def test_chunked_answer_split_anywhere(server: Scripted, step: int) -> None:
    raw = chunked(b"data: one\n\n", b"data: two\n\n", b"x" * 300, extra=b"X-A: b\r\n")
    server.scripts.append(lambda r: [raw[i : i + step] for i in range(0, len(raw), step)])
    server.scripts.append(lambda r: [ok(b"again")])
    pool = H1Pool()
    resp = await post(pool, server.url)
    got = b""
    while chunk := await resp.content.readany():
        got += chunk
    assert got == b"data: one\n\ndata: two\n\n" + b"x" * 300
    resp.release()
    again = await post(pool, server.url)
    assert await again.read() == b"again"
    again.release()
    assert server.connections == 1
    pool.close()


async def test_chunk_extensions_trailers_and_gzip(server: Scripted) -> None:
    packed = gzip.compress(b'{"big": "' + b"y" * 1000 + b'"}')
    body = b"%x;name=v\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(packed), packed)
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + body])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b'{"big": "' + b"y" * 1000 + b'"}'
    resp.release()
    pool.close()


async def test_an_interim_answer_is_skipped(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 100 Continue\r\n\r\n", ok(b"real")])
    server.scripts.append(lambda r: [b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"together")])
    pool = H1Pool()
    for expected in (b"real", b"together"):
        resp = await post(pool, server.url)
        assert resp.status == 200 and await resp.read() == expected
        resp.release()
    pool.close()


async def test_close_delimited_answer_and_connection_close(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"])
    server.scripts.append(lambda r: [b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end", b""])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b"hi"
    resp.release()
    resp = await post(pool, server.url)  # a new connection: the last one said close
    assert await resp.read() == b"until the end"  # no length: the body lasts until the server closes
    resp.release()
    assert server.connections == 2 and not any(pool._idle.values())
    pool.close()


async def test_closing_a_response_early_closes_its_connection(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.content.readany() == b"first"
    resp.close()
    await asyncio.wait_for(server.closed.wait(), 2)  # the server saw the connection go
    resp2 = await post(pool, server.url)
    assert await resp2.read() == b"{}"
    resp2.release()
    assert server.connections == 2
    pool.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(server: Scripted) -> None:
    server.scripts.append(lambda r: [ok(b"one"), b""])  # answers, then closes the idle connection
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b"one"
    resp.release()
    await asyncio.wait_for(server.closed.wait(), 2)
    await asyncio.sleep(0.05)
    assert not any(pool._idle.values())  # dropped from the pool when the server closed it
    resp = await post(pool, server.url)
    assert await resp.read() == b"{}"
    resp.release()
    assert server.connections == 2
    pool.close()


async def test_idle_and_total_timeouts(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url, idle=0.2)
    assert await resp.content.readany() == b"first"
    with pytest.raises(TimeoutError, match="stopped sending"):
        await resp.content.readany()
    resp.close()
    # The total deadline comes first: the error says so, not that the upstream went quiet.
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"])
    resp = await post(pool, server.url, idle=5.0, total=0.3)
    assert await resp.content.readany() == b"first"
    with pytest.raises(TimeoutError, match="did not finish its answer in time"):
        await resp.content.readany()
    resp.close()
    server.scripts.append(lambda r: [])  # never answers
    with pytest.raises(TimeoutError):
        await post(pool, server.url, idle=0.2)
    pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
        # Framing HTTP does not allow, which int() or a first-wins lookup would read some way:
        # sizes with signs, blanks, 0x, _ or more than 64 bits; lengths that disagree or are
        # not ASCII digits; transfer codings other than chunked, also across repeated fields.
        *(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nhello\r\n0\r\n\r\n" % size
          for size in (b"+5", b" 5", b"\t5", b"0x5", b"0_5", b"-5", b"-0", b"", b"1" + b"0" * 16, b"5 5", b"g")),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",  # data past its size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",  # a bare LF
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 10\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
)
async def test_broken_answers_are_errors_and_the_connection_is_dropped(server: Scripted, answer: bytes) -> None:
    server.scripts.append(lambda r: [answer])
    pool = H1Pool()
    with pytest.raises(H1Error):
        resp = await post(pool, server.url)
        await resp.read()
    assert not any(pool._idle.values())
    pool.close()


async def test_a_chunked_gzip_body_that_does_not_decompress_says_so(server: Scripted) -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n"  # "hello" is not gzip
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + body])
    pool = H1Pool()
    resp = await post(pool, server.url)
    with pytest.raises(H1Error, match="does not decompress"):
        await resp.read()
    pool.close()


@pytest.mark.parametrize(
    "after",
    [
        b"garbage",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nEVIL!\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    ],
    ids=["garbage", "a-whole-head", "a-partial-head", "a-second-body", "a-response-with-a-body", "a-chunked-response", "an-upgrade"],
)
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "later-read"])
async def test_bytes_after_a_chunked_body_drop_the_connection_not_the_answer(server: Scripted, after: bytes, split: bool) -> None:
    """llhttp would read what follows as the next response (a valid head raises nothing, and
    its body would reach the answer's): the body is whole and only its own, and such a
    connection is never reused."""
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    server.scripts.append(lambda r: [answer, after] if split else [answer + after])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b"hello"
    if split:
        await asyncio.sleep(0.05)  # the stray bytes arrive after the body was read
    resp.release()
    assert not any(pool._idle.values())
    pool.close()


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("endless", [b"5;" + b"e" * 70000, b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 100000])
async def test_chunk_framing_that_never_ends_is_an_error(server: Scripted, endless: bytes, gzipped: bool) -> None:
    """An extension or trailer without end: llhttp buffers none of it, but after 64 KB of
    framing without data the answer is broken (as a head that long is)."""
    encoding = b"Content-Encoding: gzip\r\n" if gzipped else b""
    if gzipped:
        endless = endless.replace(b"5\r\nhello\r\n", b"%x\r\n%s\r\n" % (len(GZ_HELLO), GZ_HELLO))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + encoding + b"\r\n"
    server.scripts.append(lambda r: [head, *(endless[i : i + 8192] for i in range(0, len(endless), 8192))])
    pool = H1Pool()
    resp = await post(pool, server.url)
    with pytest.raises(H1Error, match="chunk framing without data"):
        await asyncio.wait_for(resp.read(), 10)
    assert not any(pool._idle.values())
    pool.close()


async def test_a_chunked_body_followed_by_a_blank_line_keeps_its_connection(server: Scripted) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    server.scripts.append(lambda r: [answer + b"\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b"hello"
    resp.release()
    assert sum(len(v) for v in pool._idle.values()) == 1
    pool.close()


async def test_a_chunk_size_with_extensions_or_trailing_blanks_is_read(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 ;a=b\r\nhello\r\n00000000000000000\r\n\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b"hello"  # leading zeros are digits too
    resp.release()
    pool.close()


async def test_an_answer_with_both_lengths_is_read_chunked_and_its_connection_not_reused(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.read() == b"hello"
    resp.release()
    assert not any(pool._idle.values())  # RFC 9112 §6.3: such a connection is not trusted again
    pool.close()


async def test_thousands_of_interim_answers_in_one_read_are_all_skipped(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 100 Continue\r\n\r\n" * 3000 + ok(b"at last")])
    pool = H1Pool()
    resp = await asyncio.wait_for(post(pool, server.url), 10)  # was: recursion, a lost wake-up, a hang
    assert resp.status == 200 and await resp.read() == b"at last"
    resp.release()
    pool.close()


async def test_bytes_on_an_idle_connection_are_never_read_as_the_next_answer() -> None:
    """An upstream that sends more than its answer later (a wrong Content-Length, a stray
    write) must not have those bytes taken as the start of the next request's answer."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(7)
            writer.write(ok(b"one"))
            await asyncio.sleep(0.2)  # the client has read its answer and pooled the connection
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")  # no end yet
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(7)
            writer.write(b"\r\nSTALE" + ok(b"two"))
            await writer.drain()
            await asyncio.sleep(1)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with srv:
        url = URL(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1/x")
        pool = H1Pool()
        resp = await post(pool, url)
        assert await resp.read() == b"one"
        resp.release()
        await asyncio.sleep(0.4)
        assert not any(pool._idle.values())  # the stray bytes closed it
        resp = await post(pool, url)  # a new connection, whose first answer is "one" again
        assert await resp.read() == b"one"
        resp.close()
        pool.close()


async def test_the_total_timeout_holds_for_a_reader_slower_than_the_upstream(server: Scripted) -> None:
    piece = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [piece] * 1000 + [b"0\r\n\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url, idle=5, total=0.2)
    got = 0
    with pytest.raises(TimeoutError):
        while block := await resp.content.readany():  # there is always more waiting: no read waits
            got += len(block)
            await asyncio.sleep(0.05)  # a slow client downstream
    assert got < 1000 * 4096
    resp.close()
    pool.close()


async def test_an_error_answer_whose_body_breaks_is_still_the_upstreams_http_error(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 500 Oops\r\nContent-Length: 50\r\n\r\n", b""])
    config = ProviderConfig(name="local", kind="openai", base_url=str(server.url.with_path("/v1")))
    pool = H1Pool()
    provider = OpenAICompatProvider(config, None)  # type: ignore[arg-type]
    assert provider.use_h1(pool)
    with pytest.raises(HTTPStatusError) as caught:  # was: the client's H1Error, unmapped
        await provider.complete("m", {"messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.status == 500 and "Oops" in str(caught.value)
    pool.close()


async def test_a_bad_chunk_midway_breaks_the_body(server: Scripted) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\nzz\r\n"])
    pool = H1Pool()
    resp = await post(pool, server.url)
    assert await resp.content.readany() == b"first"
    with pytest.raises(H1Error):
        await resp.content.readany()
    pool.close()


async def test_nothing_listening_is_a_connect_error_and_the_adapter_says_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = H1Pool()
    with pytest.raises(H1ConnectError):
        await post(pool, URL(f"http://127.0.0.1:{port}/v1/x"))
    config = ProviderConfig(name="local", kind="openai", base_url=f"http://127.0.0.1:{port}/v1")
    provider = OpenAICompatProvider(config, None, timeouts=Timeouts(connect=1))  # type: ignore[arg-type]
    assert provider.use_h1(pool)
    with pytest.raises(ConnectFailed):
        await provider.complete("m", {"messages": [{"role": "user", "content": "hi"}]})
    pool.close()


async def test_a_stream_cut_midway_is_a_broken_stream_for_the_adapter(server: Scripted) -> None:
    frame = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    server.scripts.append(lambda r: [head + b"%x\r\n%s\r\n" % (len(frame), frame), b""])
    config = ProviderConfig(name="local", kind="openai", base_url=str(server.url.with_path("/v1")))
    pool = H1Pool()
    provider = OpenAICompatProvider(config, None)  # type: ignore[arg-type]
    assert provider.use_h1(pool)
    got = []
    with pytest.raises(StreamBroken):
        async for chunk in provider.stream("m", {"messages": [{"role": "user", "content": "hi"}]}):
            got.append(chunk.delta)
    assert got == [{"content": "x"}]
    pool.close()


def test_headers_that_cannot_be_written_as_they_are_stay_with_aiohttp() -> None:
    pool = H1Pool()
    tls = OpenAICompatProvider(ProviderConfig(name="a", kind="openai", base_url="https://api.example.com/v1"), None, key="k")  # type: ignore[arg-type]
    assert not tls.use_h1(pool) and tls.h1 is None
    odd = OpenAICompatProvider(
        ProviderConfig(name="b", kind="openai", base_url="http://127.0.0.1:1/v1", headers={"X-Odd": "caf\u00e9"}), None  # type: ignore[arg-type]
    )
    assert not odd.use_h1(pool)
    plain = OpenAICompatProvider(ProviderConfig(name="c", kind="openai", base_url="http://127.0.0.1:1/v1"), None, key="sk-1")  # type: ignore[arg-type]
    assert plain.use_h1(pool)
    assert plain.h1_headers == b"Content-Type: application/json\r\nAuthorization: Bearer sk-1\r\n"
