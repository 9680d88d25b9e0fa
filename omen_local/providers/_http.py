"""The one transport: every upstream request goes through aiohttp's ClientSession, here.

Why one: a second, hand-written client beside aiohttp saved tens of microseconds per
request and cost a second set of framing, TLS, proxy and redirect rules (and a hang on
large answers) that the suite had to prove twice (issue 22). What this module adds to
aiohttp is only what OMEN's upstream requests need:

* no redirects, ever: a 3xx is an error naming the Location, so a key is never re-sent
  to wherever an upstream points (issue 21.9);
* a POST sent on a *reused* keep-alive connection is sent again, once, only when the
  upstream cannot have worked on it: writing it failed (reset/broken pipe), or the
  connection closed without a byte of answer within :data:`RACE_S` of sending (the FIN
  of an idle close racing the reuse). A later close may come from a worker that read
  the request, worked and died: sending it again would bill it twice (Go's net/http
  retries a non-replayable POST only when nothing was written). A connection made for
  the request is never retried;
* bounded reads: a whole (non-streamed) answer is at most :data:`MAX_ANSWER` bytes after
  decompression (a gzip bomb stops there too), an error body :data:`MAX_ERROR_BODY`,
  an NDJSON line :data:`MAX_LINE` (SSE events: ``_sse.MAX_EVENT``);
* failures as :class:`UpstreamError` with the provider's own message (keys redacted), an
  error status classified by the adapter (``Provider.classify``).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import ssl
import weakref
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from time import monotonic, time
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from .. import jsonutil
from . import refusals
from .errors import (
    ConnectFailed,
    ConnectionDropped,
    HTTPStatusError,
    ProtocolError,
    Redirected,
    RequestRefused,
    RequestRejected,
    StreamBroken,
    UpstreamError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from .base import Provider

MAX_ERROR_BODY = 64 * 1024
MAX_ANSWER = 8 * 1024 * 1024
"""A non-streamed chat or text answer larger than this (decompressed) is refused: no model
writes 8 MB in one answer, and OMEN holds a whole answer in memory to translate it."""
MAX_EMBEDDINGS = 64 * 1024 * 1024
"""Embeddings answers are bigger by nature (2048 inputs of 3072 floats as JSON is ~60 MB)."""
MAX_LINE = 1 << 20  # an NDJSON line longer than this is not a streamed chunk
PER_HOST = 256  # open connections to one upstream (OMEN's own limits decide who waits first)
KEEPALIVE_S = 30.0  # below the idle timeouts of the usual servers and load balancers (60 s+)
RACE_S = 0.25
"""A reused connection closed without an answer this soon after the request was sent is taken
for an idle close that raced the reuse (the upstream never read the request), so the POST is
sent again. A product heuristic: a close that comes later may follow a request the upstream
read and worked on (a crashed worker, a proxy), and is never retried."""
_clock = monotonic  # injected by tests


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def error_message(payload: Any) -> str | None:
    """The human message in OpenAI, Anthropic or Ollama error bodies."""
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
            return msg if isinstance(msg, str) else None
        if isinstance(err, str):
            return err
        msg = payload.get("message")
        return msg if isinstance(msg, str) else None
    return None


def body_message(body: bytes, reason: str | None = None) -> str:
    """The message of an error body: the JSON error's, else the text, else the reason."""
    try:
        message = error_message(jsonutil.loads(body)) if body else None
    except jsonutil.JSONDecodeError:
        message = None
    if message is None:
        message = body.decode("utf-8", "replace")[:500].strip() or reason or "no body"
    return message


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After, or OpenAI's ``retry-after-ms``, in seconds."""
    seconds = parse_retry_after(headers.get("Retry-After"))
    if seconds is None:
        ms = headers.get("retry-after-ms")
        if ms:
            try:
                seconds = float(ms) / 1000
            except ValueError:
                seconds = None
    return seconds


def status_error(provider: Provider, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    """The usual reading of an error status (what ``Provider.classify`` does unless an adapter
    knows better): a refusal the request caused (refusals.py) whatever its status, else by status."""
    message = body_message(body)
    try:
        payload = jsonutil.loads(body) if body else None
    except jsonutil.JSONDecodeError:
        payload = None
    refused = refusal_error(provider, status, message, payload)
    if refused is not None:
        return refused
    return HTTPStatusError(
        provider.name,
        provider.redact(f"{provider.name} returned HTTP {status}: {message}"),
        status=status,
        retry_after=retry_after(headers),
    )


def refusal_error(provider: Provider, status: int, message: str, payload: Any) -> RequestRefused | None:
    """The error for a refusal the request caused (refusals.classify), else None."""
    found = refusals.classify(status, message, payload)
    if found is None:
        return None
    return RequestRefused(
        provider.name,
        provider.redact(f"{provider.name} refused the request (HTTP {status}): {found.describe()}: {message}"),
        reason=found.reason,
        param=found.param,
        prompt_tokens=found.prompt_tokens,
        context_window=found.context_window,
        upstream_status=status,
    )


def translate(provider: Provider, exc: BaseException, *, midstream: bool = False) -> UpstreamError:
    """Map a client-side exception to an :class:`UpstreamError` (never leaks the key).

    Only a failure to connect at all blames the whole provider; a connection that was
    accepted and then dropped, reset or timed out says something about this request's
    model (another model of the same server may answer fine).
    """
    if isinstance(exc, UpstreamError):
        return exc
    if midstream:
        what = "stopped sending" if isinstance(exc, asyncio.TimeoutError) else f"connection failed: {exc}"
        return StreamBroken(provider.name, provider.redact(f"{provider.name} {what}"))
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(provider.name, f"{provider.name} did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectFailed(provider.name, provider.redact(f"cannot reach {provider.name}: {exc}"))
    return ConnectionDropped(provider.name, provider.redact(f"{provider.name} closed the connection: {exc}"))


def encode(provider: Provider, body: dict[str, Any]) -> bytes:
    """The request as JSON; a body that cannot be encoded is the request's fault, not the upstream's."""
    try:
        return jsonutil.dumps(body)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise RequestRejected(provider.name, f"the request cannot be encoded for {provider.name}: {exc}") from None


# ---------------------------------------------------------------- the session


class _Attempt:
    """One send of a request: whether it went out on a pooled (reused) connection."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("omen_upstream_attempt", default=None)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, telling the request being sent (through ``_ATTEMPT``) whether its
    connection came from the pool. (``connect`` is BaseConnector's documented coroutine; a
    ``TraceConfig`` would tell the same at about 15-30 us a request, this at about 1.)"""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._used: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[aiohttp.tracing.Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (BaseConnector.connect's signature)
    ) -> aiohttp.connector.Connection:
        conn = await super().connect(req, traces, timeout)
        proto = conn.protocol
        if proto is not None:
            if proto in self._used:
                attempt = _ATTEMPT.get()
                if attempt is not None:
                    attempt.reused = True
            else:
                self._used.add(proto)
        return conn


def make_session() -> aiohttp.ClientSession:
    """The session every upstream request of one OmenService goes through.

    Keep-alive pooled (30 s, per-host bounded); no environment lookups per request
    (``Provider.proxy`` is resolved once); compressed answers decoded (reads stay bounded
    after decompression, see :func:`read_body`); headers bounded by aiohttp's defaults.
    """
    return aiohttp.ClientSession(
        connector=_Connector(limit=0, limit_per_host=PER_HOST, keepalive_timeout=KEEPALIVE_S),
        trust_env=False,
        auto_decompress=True,
    )


def ssl_context(ca_file: str) -> ssl.SSLContext:
    """The system's trusted CAs plus ``ca_file`` (a provider's ``ca_file``: a private CA, a
    corporate proxy's, a test CA). Made once per file and version of it (a reload after the
    file changed reads it again)."""
    try:
        version = os.stat(ca_file).st_mtime_ns
    except OSError:
        version = 0  # gone since the config was read: loading it says so
    return _ssl_context(ca_file, version)


@functools.lru_cache(maxsize=16)
def _ssl_context(ca_file: str, version: int) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_file)
    return context


@functools.lru_cache(maxsize=256)
def _url(url: str) -> URL:
    """A provider's endpoint, parsed once (a handful per provider)."""
    return URL(url)


def _unanswered(exc: BaseException, elapsed: float = 0.0) -> bool:
    """The upstream cannot have worked on the request: within :data:`RACE_S` of sending it
    (``elapsed``: seconds since), writing it failed on a connection the upstream had closed,
    or the connection closed (or was reset) without any byte of an answer. Later, a reset or
    a close may come from a worker that read the request and died: never sent again."""
    if elapsed >= RACE_S:
        return False
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return isinstance(exc.message, str)  # not a str: the parser had started on an answer
    if isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError):
        # aiohttp's "Can not write request body" carries the reset as its cause (errno None
        # when the transport was already closing).
        return exc.errno in (errno.ECONNRESET, errno.EPIPE) or isinstance(exc.__cause__, ConnectionResetError | BrokenPipeError)
    return False


LIST_HEADERS = frozenset({"anthropic-beta"})
"""Headers whose value is a comma-separated list: a request's values join the provider's."""


def merged_headers(fixed: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``fixed`` with ``extra`` on top; a list header (``anthropic-beta``) a user configured
    keeps its values and gains the request's, each once, instead of being replaced."""
    out = dict(fixed)
    lower = {k.lower(): k for k in out}
    for name, value in extra.items():
        key = lower.get(name.lower())
        if key is not None and name.lower() in LIST_HEADERS:
            values = [v.strip() for v in f"{out[key]},{value}".split(",") if v.strip()]
            out[key] = ",".join(dict.fromkeys(values))
        else:
            if key is not None:
                del out[key]
            out[name] = value
    return out


async def _post(
    provider: Provider, url: str, data: bytes, headers: Mapping[str, str] | None = None, *, whole: bool = False
) -> aiohttp.ClientResponse:
    """One POST, sent again once if it went out on a reused connection that turned out closed
    before the upstream could work on it (:func:`_unanswered`).

    ``headers``: this request's own headers (an Anthropic beta a body field needs), on top of
    the provider's fixed ones (:func:`merged_headers`). ``whole``: a non-streamed answer, with
    no idle timeout (the server is silent until the model is done; ``Timeouts.whole_timeout``)."""
    timeout = provider._whole_timeout if whole else provider._client_timeout
    sent = merged_headers(provider.headers, headers) if headers else provider.headers
    for _ in range(2):
        attempt = _Attempt()
        token = _ATTEMPT.set(attempt)
        started = _clock()
        try:
            return await provider.session.post(
                _url(url),
                data=data,
                headers=sent,
                timeout=timeout,
                proxy=provider.proxy,
                ssl=provider.ssl,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if not (attempt.reused and _unanswered(exc, _clock() - started)):
                raise translate(provider, exc) from None
        finally:
            _ATTEMPT.reset(token)
    raise AssertionError("unreachable")  # pragma: no cover


async def read_body(provider: Provider, resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, decompressed, refused past ``limit`` bytes (the connection is then closed)."""
    declared = resp.content_length
    if declared is not None and declared > limit and "Content-Encoding" not in resp.headers:
        raise _too_large(provider, limit)
    buf = bytearray()
    try:
        while block := await resp.content.readany():
            buf += block
            if len(buf) > limit:
                raise _too_large(provider, limit)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc, midstream=True) from None
    return bytes(buf)


def _too_large(provider: Provider, limit: int) -> ProtocolError:
    return ProtocolError(
        provider.name,
        f"{provider.name} sent an answer larger than {limit // (1024 * 1024)} MB, more than OMEN reads "
        "in one piece (ask for a stream, or a shorter answer)",
    )


async def _error(provider: Provider, resp: aiohttp.ClientResponse) -> UpstreamError:
    """What an answer that is not a 2xx means: a redirect (never followed), or the adapter's
    reading of the error status."""
    if 300 <= resp.status < 400:
        location = resp.headers.get("Location", "")[:300] or "(no Location)"
        return Redirected(
            provider.name,
            provider.redact(f"{provider.name} answered HTTP {resp.status} redirecting to {location}; "
                            "OMEN follows no redirects for upstreams (fix base_url)"),
            status=resp.status,
        )
    body = b""
    try:
        while len(body) < MAX_ERROR_BODY and (block := await resp.content.readany()):
            body += block
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the status is the answer; a body that broke adds nothing
    return provider.classify(resp.status, resp.headers, body[:MAX_ERROR_BODY])


class Exchange:
    """``async with``: POST ``body`` as JSON and give the 2xx response; any other status
    raises what the adapter classifies it as.

    The connection goes back to the pool only when the body was read to the end; on
    any error or cancellation it is closed, so the upstream stops generating at once.
    (A class, not ``@asynccontextmanager``: every stream enters one, and a generator-based
    manager costs an async generator, its loop hooks and contextlib's frames per stream.)
    """

    __slots__ = ("_body", "_headers", "_provider", "_resp", "_url", "_whole")

    def __init__(
        self, provider: Provider, url: str, body: dict[str, Any], headers: Mapping[str, str] | None = None,
        *, whole: bool = False,
    ) -> None:
        self._provider = provider
        self._url = url
        self._body = body
        self._headers = headers
        self._resp: aiohttp.ClientResponse | None = None
        self._whole = whole

    async def __aenter__(self) -> aiohttp.ClientResponse:
        provider = self._provider
        resp = await _post(provider, self._url, encode(provider, self._body), self._headers, whole=self._whole)
        if resp.status >= 300:
            try:
                raise await _error(provider, resp)
            finally:
                resp.close()
        self._resp = resp
        return resp

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            if exc_type is None:
                resp.release()
            else:
                resp.close()


async def get_json(provider: Provider, url: str) -> Any:
    """GET ``url`` with the provider's headers (discovery); the decoded JSON, or UpstreamError."""
    try:
        async with provider.session.get(
            url,
            headers=provider.headers,
            timeout=provider._client_timeout,
            proxy=provider.proxy,
            ssl=provider.ssl,
            allow_redirects=False,
        ) as resp:
            if resp.status >= 300:
                raise await _error(provider, resp)
            return decode(provider, await read_body(provider, resp, MAX_ANSWER))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc) from None


def decode(provider: Provider, raw: bytes) -> Any:
    try:
        return jsonutil.loads(raw)
    except jsonutil.JSONDecodeError:
        raise ProtocolError(provider.name, f"{provider.name} sent a body that is not JSON") from None


async def read_json(provider: Provider, resp: aiohttp.ClientResponse, limit: int = MAX_ANSWER) -> Any:
    """A whole answer's JSON, at most ``limit`` bytes of it."""
    return decode(provider, await read_body(provider, resp, limit))


async def read_block(provider: Provider, resp: aiohttp.ClientResponse) -> bytes:
    """Whatever bytes have arrived (b"" at the end), transport errors as mid-stream UpstreamErrors."""
    try:
        return await resp.content.readany()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc, midstream=True) from None


async def ndjson_reads(provider: Provider, resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The complete non-blank lines of each read (without line ends); the last read may end
    without a newline. A read at a time, so a stream's lines cross the layers together."""
    tail = b""
    while True:
        block = await read_block(provider, resp)
        if block:
            lines = (tail + block if tail else block).split(b"\n")
            tail = lines.pop()
            if len(tail) > MAX_LINE:
                raise ProtocolError(provider.name, f"{provider.name} sent a line longer than {MAX_LINE} bytes")
        else:
            lines, tail = [tail], b""
        out = [line for line in lines if line.strip()]
        if out:
            yield out
        if not block:
            return
