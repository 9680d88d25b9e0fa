"""The one transport (providers/_http.py over aiohttp) against a server that sends exact bytes:
keep-alive, the retry of a POST on a reused connection the upstream had closed, no
redirects, body bounds, sloppy framing, timeouts and errors as the adapters see them."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from yarl import URL

from omen_local import jsonutil
from omen_local.config import ProviderConfig
from omen_local.providers import _http
from omen_local.providers.base import Timeouts
from omen_local.providers.errors import (
    ConnectFailed,
    ConnectionDropped,
    HTTPStatusError,
    ProtocolError,
    Redirected,
    StreamBroken,
    UpstreamError,
)
from omen_local.providers.openai_compat import OpenAICompatProvider

Script = Callable[[bytes], list[Any]]  # request bytes -> pieces written apart (b"": close there; an asyncio.Event: wait for it)


class Scripted:
    """A TCP server that answers each request with the next script; records what it saw.

    ``idle_close_s``: close a connection that waited that long for its next request (an
    upstream's keep-alive timeout); ``idle_closed`` is set when it does.
    """

    def __init__(self, idle_close_s: float | None = None) -> None:
        self.scripts: list[Script | None] = []  # None: close the connection without answering
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.idle_closed = asyncio.Event()
        self.idle_close_s = idle_close_s
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                if served and self.idle_close_s is not None:
                    try:
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_close_s)
                    except TimeoutError:
                        self.idle_closed.set()
                        return
                else:
                    head = await reader.readuntil(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), b"0"))
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                served += 1
                script = self.scripts.pop(0) if self.scripts else (lambda r: [ok(COMPLETION)])
                if script is None:
                    return
                for piece in script(request):
                    if isinstance(piece, asyncio.Event):  # the upstream works until the test says
                        await piece.wait()
                        continue
                    if not piece:  # b"": close the connection here
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

    @property
    def base(self) -> str:
        return str(self.url.with_path("/v1"))


COMPLETION = b'{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}'
ASK = {"messages": [{"role": "user", "content": "hi"}]}


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(*pieces: bytes, extra: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n%s\r\n" % extra + body


def big_completion(size: int) -> bytes:
    """A chat completion whose content makes the body ``size`` bytes or a little more."""
    return COMPLETION.replace(b'"content":"hi"', b'"content":"' + b"x" * size + b'"')


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    s = Scripted()
    s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    async with s.server:
        yield s


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with _http.make_session() as s:
        yield s


def provider_for(base: str, session: aiohttp.ClientSession, **kw: Any) -> OpenAICompatProvider:
    # dialect fixed: the transport is under test, not the one GET that asks a local server its dialect
    return OpenAICompatProvider(ProviderConfig(name="local", kind="openai", base_url=base, dialect="generic"), session, **kw)


async def test_keep_alive_reuses_one_connection(server: Scripted, session: aiohttp.ClientSession) -> None:
    provider = provider_for(server.base, session, key="sk-1")
    for _ in range(3):
        done = await provider.complete("m", ASK)
        assert done.body["choices"][0]["message"]["content"] == "hi"
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer sk-1\r\n" in server.requests[0]


async def test_the_connector_tells_a_request_whether_its_connection_was_pooled(server: Scripted, session: aiohttp.ClientSession) -> None:
    """The retry below rests on this (an override of aiohttp's documented
    ``BaseConnector.connect``): if aiohttp changes it, this says so first."""
    marks = []
    for _ in range(3):
        attempt = _http._Attempt()
        token = _http._ATTEMPT.set(attempt)
        try:
            async with session.post(server.url, data=b"{}") as resp:
                await resp.read()
        finally:
            _http._ATTEMPT.reset(token)
        marks.append(attempt.reused)
    assert marks == [False, True, True], "aiohttp's BaseConnector.connect no longer reports pooled connections to _http._Connector"
    assert server.connections == 1


async def test_a_post_on_a_reused_connection_closed_before_any_answer_is_sent_again_once(
    server: Scripted, session: aiohttp.ClientSession
) -> None:
    """The upstream closes the pooled connection as the second request arrives (its
    keep-alive timer won the race): OMEN sends it again on a fresh connection."""
    provider = provider_for(server.base, session)
    await provider.complete("m", ASK)
    server.scripts.append(None)  # the next request on this connection: closed unanswered
    done = await provider.complete("m", ASK)
    assert done.body["choices"][0]["message"]["content"] == "hi"
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_reused_connection_closed_after_the_upstream_worked_on_the_request_is_not_sent_again(
    server: Scripted, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream read the request, worked on it for a second and closed (a crashed worker,
    a proxy): it may have billed it, so the POST is not sent twice."""
    now = [0.0]
    monkeypatch.setattr(_http, "_clock", lambda: now[0])
    provider = provider_for(server.base, session)
    await provider.complete("m", ASK)
    read, worked = asyncio.Event(), asyncio.Event()

    def script(request: bytes) -> list[Any]:
        read.set()
        return [worked, b""]  # read it, work until told, close unanswered

    server.scripts.append(script)
    task = asyncio.create_task(provider.complete("m", ASK))
    await asyncio.wait_for(read.wait(), 10)
    now[0] += 1.0  # a second of work
    worked.set()
    with pytest.raises(ConnectionDropped):
        await task
    assert len(server.requests) == 2 and server.connections == 1


async def test_a_connection_made_for_the_request_is_never_retried(server: Scripted, session: aiohttp.ClientSession) -> None:
    """A fresh connection closed without an answer may have been read (a worker that died
    on it): a POST is not sent twice."""
    server.scripts.append(None)
    provider = provider_for(server.base, session)
    with pytest.raises(ConnectionDropped):
        await provider.complete("m", ASK)
    assert server.connections == 1 and len(server.requests) == 1


async def test_the_retry_happens_once(server: Scripted, session: aiohttp.ClientSession) -> None:
    provider = provider_for(server.base, session)
    await provider.complete("m", ASK)
    server.scripts += [None, None]  # the reused connection, then the fresh one: both closed unanswered
    with pytest.raises(ConnectionDropped):
        await provider.complete("m", ASK)
    assert len(server.requests) == 3 and server.connections == 2


async def test_an_upstream_that_closes_idle_connections_after_a_second(session: aiohttp.ClientSession) -> None:
    srv = Scripted(idle_close_s=1.0)
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    async with srv.server:
        provider = provider_for(srv.base, session)
        await provider.complete("m", ASK)
        await asyncio.wait_for(srv.idle_closed.wait(), 10)  # the upstream's keep-alive ran out
        done = await provider.complete("m", ASK)  # whether or not OMEN saw the close yet
        assert done.body["choices"][0]["message"]["content"] == "hi"
        assert srv.connections == 2


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_redirect_is_an_error_naming_the_location_and_the_key_goes_nowhere(
    server: Scripted, session: aiohttp.ClientSession, kind: str, stream: bool
) -> None:
    """Issue 21.9: an upstream answering 307 to another address must not get the key (and
    the prompt) re-sent there; the redirect is an error naming where it pointed."""
    from omen_local.providers.registry import provider_kinds

    target = Scripted()
    target.server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    async with target.server:
        location = str(target.url).encode()
        config = ProviderConfig(name="up", kind=kind, base_url=server.base, dialect="generic" if kind == "openai" else None)
        provider = provider_kinds()[kind](config, session, key="sk-secret")
        for status in (301, 302, 303, 307, 308):
            server.scripts.append(lambda r, s=status: [b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (s, location)])
            with pytest.raises(Redirected) as caught:
                if stream:
                    async for _ in provider.stream("m", ASK):
                        pass
                else:
                    await provider.complete("m", ASK)
            assert caught.value.status == status and str(target.url) in caught.value.message
            assert caught.value.retryable and caught.value.blame == "provider"
        if kind != "anthropic":  # discovery's GET follows none either (Anthropic's models are configured)
            server.scripts.append(lambda r: [b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location])
            with pytest.raises(Redirected):
                await provider.discover()
        assert target.requests == [] and target.connections == 0


@pytest.mark.parametrize("encoding", ["identity", "gzip", "chunked"])
async def test_a_2_mb_answer_is_read_and_a_10_mb_one_refused(server: Scripted, session: aiohttp.ClientSession, encoding: str) -> None:
    def answer(body: bytes) -> bytes:
        if encoding == "gzip":
            return ok(gzip.compress(body, 1), b"Content-Encoding: gzip\r\n")
        if encoding == "chunked":
            return chunked(*(body[i : i + 65536] for i in range(0, len(body), 65536)))
        return ok(body)

    provider = provider_for(server.base, session)
    two = big_completion(2 * 1024 * 1024)
    server.scripts.append(lambda r: [answer(two)])
    done = await provider.complete("m", ASK)
    assert len(done.body["choices"][0]["message"]["content"]) == 2 * 1024 * 1024
    ten = big_completion(10 * 1024 * 1024)
    server.scripts.append(lambda r: [answer(ten)])
    with pytest.raises(ProtocolError, match="larger than 8 MB"):
        await provider.complete("m", ASK)
    done = await provider.complete("m", ASK)  # still serving
    assert done.body["choices"][0]["message"]["content"] == "hi"


async def test_a_gzip_bomb_stops_at_the_bound(server: Scripted, session: aiohttp.ClientSession) -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), 9)  # ~200 KB that would be 200 MB
    server.scripts.append(lambda r: [ok(bomb, b"Content-Encoding: gzip\r\n")])
    with pytest.raises(ProtocolError, match="larger than 8 MB"):
        await provider_for(server.base, session).complete("m", ASK)


async def test_embeddings_have_a_larger_bound(server: Scripted, session: aiohttp.ClientSession) -> None:
    vector = b"[" + b",".join([b"0.123456789"] * 1536) + b"]"
    items = b",".join(b'{"object":"embedding","index":%d,"embedding":%s}' % (i, vector) for i in range(600))
    body = b'{"object":"list","model":"e","data":[' + items + b'],"usage":{"prompt_tokens":1,"total_tokens":1}}'
    assert len(body) > 9 * 1024 * 1024
    server.scripts.append(lambda r: [ok(body)])
    out = await provider_for(server.base, session).embed("e", {"input": ["a"] * 600})
    assert len(out.vectors) == 600 and len(out.vectors[0]) == 1536


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
        *(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nhello\r\n0\r\n\r\n" % size
          for size in (b"+5", b"0x5", b"0_5", b"-5", b"1" + b"0" * 16, b"g")),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",  # data past its size
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 10\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # ends before its last chunk
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\":",  # ends before its length
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",  # not gzip
    ],
)
async def test_broken_answers_are_upstream_errors_and_the_server_keeps_going(
    server: Scripted, session: aiohttp.ClientSession, answer: bytes
) -> None:
    server.scripts.append(lambda r: [answer, b""])
    provider = provider_for(server.base, session, timeouts=Timeouts(connect=2, idle=5, total=10))
    with pytest.raises(UpstreamError):
        await asyncio.wait_for(provider.complete("m", ASK), 15)
    done = await provider.complete("m", ASK)  # a new connection, a good answer
    assert done.body["choices"][0]["message"]["content"] == "hi"


async def test_an_error_answer_whose_body_breaks_is_still_the_upstreams_http_error(
    server: Scripted, session: aiohttp.ClientSession
) -> None:
    server.scripts.append(lambda r: [b"HTTP/1.1 500 Oops\r\nContent-Length: 50\r\n\r\n", b""])
    with pytest.raises(HTTPStatusError) as caught:
        await provider_for(server.base, session).complete("m", ASK)
    assert caught.value.status == 500


async def test_nothing_listening_is_a_connect_error(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = provider_for(f"http://127.0.0.1:{port}/v1", session, timeouts=Timeouts(connect=1))
    with pytest.raises(ConnectFailed):
        await provider.complete("m", ASK)


async def test_a_stream_cut_midway_is_a_broken_stream(server: Scripted, session: aiohttp.ClientSession) -> None:
    frame = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    server.scripts.append(lambda r: [head + b"%x\r\n%s\r\n" % (len(frame), frame), b""])
    got = []
    with pytest.raises(StreamBroken):
        async for chunk in provider_for(server.base, session).stream("m", ASK):
            got.append(chunk.delta)
    assert got == [{"content": "x"}]


async def test_an_upstream_that_goes_quiet_midstream_times_out(server: Scripted, session: aiohttp.ClientSession) -> None:
    frame = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    server.scripts.append(lambda r: [head + b"%x\r\n%s\r\n" % (len(frame), frame)])  # then nothing
    provider = provider_for(server.base, session, timeouts=Timeouts(connect=2, idle=0.3, total=30))
    with pytest.raises(StreamBroken, match="stopped sending"):
        async for _ in provider.stream("m", ASK):
            pass


async def test_a_whole_answer_written_for_longer_than_the_idle_timeout_arrives(server: Scripted, session: aiohttp.ClientSession) -> None:
    """A non-streamed answer sends nothing until the model is done: the idle timeout (for
    streams) must not cut it (and fail over, paying twice); the total bounds it."""
    generated = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, generated.set)  # the model writes for a second
    server.scripts.append(lambda r: [generated, ok(COMPLETION)])
    provider = provider_for(server.base, session, timeouts=Timeouts(connect=2, idle=0.2, total=30))
    done = await provider.complete("m", ASK)
    assert done.body["choices"][0]["message"]["content"] == "hi"
    assert len(server.requests) == 1


@pytest.mark.parametrize(("dialect", "probed"), [("generic", False), ("llamacpp", False), ("llama-cpp-python", True)])
async def test_an_empty_stream_is_asked_again_unstreamed_only_of_llama_cpp_python(
    server: Scripted, session: aiohttp.ClientSession, dialect: str, probed: bool
) -> None:
    """The unstreamed probe re-sends the whole prompt: only llama-cpp-python, which closes an
    empty 200 stream when it cannot start, is asked why; a gateway on loopback would bill it again."""
    from omen_local.providers.errors import EmptyStream

    empty = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n"
    server.scripts += [lambda r: [empty], lambda r: [ok(COMPLETION)]]
    config = ProviderConfig(name="local", kind="openai", base_url=server.base, dialect=dialect)
    provider = OpenAICompatProvider(config, session)
    with pytest.raises(EmptyStream):
        async for _ in provider.stream("m", ASK):
            pass
    assert len(server.requests) == (2 if probed else 1)


async def test_chunk_extensions_trailers_and_gzip_are_read(server: Scripted, session: aiohttp.ClientSession) -> None:
    packed = gzip.compress(big_completion(1000))
    body = b"%x;name=v\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(packed), packed)
    server.scripts.append(lambda r: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + body])
    done = await provider_for(server.base, session).complete("m", ASK)
    assert done.body["choices"][0]["message"]["content"] == "x" * 1000


async def test_a_custom_ca_file_is_trusted_for_its_provider_only(tmp_path: Any, session: aiohttp.ClientSession) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    srv = Scripted()
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with srv.server:
        base = srv.base.replace("http://", "https://")
        trusting = OpenAICompatProvider(ProviderConfig(name="t", kind="openai", base_url=base, ca_file=str(ca_file), dialect="generic"), session)
        done = await trusting.complete("m", ASK)
        assert done.body["choices"][0]["message"]["content"] == "hi"
        stranger = OpenAICompatProvider(ProviderConfig(name="s", kind="openai", base_url=base, dialect="generic"), session)
        with pytest.raises(ConnectFailed):  # an unknown CA: no request is sent
            await stranger.complete("m", ASK)
    assert len(srv.requests) == 1


def test_error_bodies_are_read_for_their_message() -> None:
    assert _http.body_message(jsonutil.dumps({"error": {"message": "nope"}})) == "nope"
    assert _http.body_message(b"plain text") == "plain text"
    assert _http.body_message(b"", "Bad Gateway") == "Bad Gateway"


def test_a_ca_file_that_is_missing_or_not_pem_is_a_config_error(tmp_path: Any) -> None:
    from omen_local.config import ConfigError, load_config

    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello\n")
    for path in (tmp_path / "missing.pem", bad):
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[providers.x]\nkind = "openai"\nbase_url = "https://127.0.0.1:1/v1"\nca_file = "{path}"\n')
        with pytest.raises(ConfigError, match=r"providers\.x\.ca_file"):
            load_config(cfg)


def test_a_body_write_on_a_connection_the_upstream_closed_counts_as_unanswered() -> None:
    """aiohttp reports a write to a closing pooled connection as ClientOSError(None, "Can not
    write request body ...") caused by a ConnectionResetError: the upstream never read the
    request, so it may be sent again (seen against llama-cpp-python's 5 s keep-alive)."""
    from omen_local.providers._http import _unanswered

    reset = aiohttp.ClientOSError(None, "Can not write request body for http://127.0.0.1:1/v1/chat/completions")
    reset.__cause__ = aiohttp.client_exceptions.ClientConnectionResetError("Cannot write to closing transport")
    assert _unanswered(reset)
    other = aiohttp.ClientOSError(None, "Can not write request body for http://127.0.0.1:1/v1/chat/completions")
    other.__cause__ = OSError("disk full")
    assert not _unanswered(other)


LLAMA_ERROR = (
    b'error: {"code":400,"message":"the request exceeds the available context size, try increasing it",'
    b'"type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}\n\n'
)


def sse(*events: bytes) -> bytes:
    return chunked(*events, extra=b"").replace(b"application/json", b"text/event-stream")


@pytest.mark.parametrize("frame", [LLAMA_ERROR, b'data: {"error": ' + LLAMA_ERROR[7:-2] + b"}\n\n"], ids=["llama-server", "data-error"])
async def test_a_stream_error_before_any_content_is_the_upstreams_refusal(
    server: Scripted, session: aiohttp.ClientSession, frame: bytes
) -> None:
    """llama.cpp's server says a stream failed with an ``error: {...}`` line then [DONE]: the
    client learns the prompt is too long (a refusal another candidate may take), not a broken model."""
    from omen_local.providers.errors import RequestRefused

    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    server.scripts.append(lambda r: [sse(role, frame, b"data: [DONE]\n\n")])
    provider = provider_for(server.base, session)
    with pytest.raises(RequestRefused) as caught:
        async for _ in provider.stream("m", ASK):
            pass
    assert caught.value.reason == "context_length"
    assert (caught.value.prompt_tokens, caught.value.context_window) == (9000, 8192)
    assert "prompt of 9,000 tokens exceeds the context window of 8,192" in caught.value.message


async def test_a_stream_error_after_content_breaks_the_stream_with_the_upstreams_words(
    server: Scripted, session: aiohttp.ClientSession
) -> None:
    content = b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n'
    server.scripts.append(lambda r: [sse(content, LLAMA_ERROR, b"data: [DONE]\n\n")])
    provider = provider_for(server.base, session)
    got = []
    with pytest.raises(StreamBroken) as caught:
        async for chunk in provider.stream("m", ASK):
            got.append(chunk.delta.get("content"))
    assert got == ["hel"]
    assert "exceeds the available context size" in caught.value.message


def test_a_reset_long_after_sending_is_never_unanswered() -> None:
    """A reset that comes after the race window may be a worker that read the request and
    died: sending it again could bill it twice (the review's finding, for resets as for closes)."""
    from omen_local.providers._http import RACE_S, _unanswered

    reset = aiohttp.ClientOSError(104, "Connection reset by peer")
    assert _unanswered(reset, 0.0)
    assert not _unanswered(reset, RACE_S + 1)
    closed = aiohttp.ServerDisconnectedError()
    assert _unanswered(closed, 0.0) and not _unanswered(closed, RACE_S + 1)
