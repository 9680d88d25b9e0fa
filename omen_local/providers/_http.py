"""Transport helpers shared by the adapters: one POST, one error mapping.

Upstream failures become :class:`UpstreamError` with the provider's own message (keys
redacted) so the router can decide on failover without knowing any wire format.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

import aiohttp
from yarl import URL

from .. import jsonutil
from . import refusals
from ._h1 import H1ConnectError
from ._h1 import Response as H1Response
from .base import Provider
from .errors import (
    ConnectFailed,
    ConnectionDropped,
    HTTPStatusError,
    ProtocolError,
    RequestRefused,
    RequestRejected,
    StreamBroken,
    UpstreamError,
    UpstreamTimeout,
)

_MAX_ERROR_BODY = 64 * 1024
Response = aiohttp.ClientResponse | H1Response  # aiohttp's, or the lean client's (plain-HTTP upstreams)


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


async def _http_error(provider: Provider, resp: Response) -> UpstreamError:
    try:
        raw = await resp.content.read(_MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError, OSError):  # OSError: the lean client's (H1Error)
        raw = b""
    payload: Any = None
    try:
        payload = jsonutil.loads(raw) if raw else None
        message = error_message(payload)
    except jsonutil.JSONDecodeError:
        message = None
    if message is None:
        message = raw.decode("utf-8", "replace")[:500].strip() or resp.reason or "no body"
    refused = refusal_error(provider, resp.status, message, payload)
    if refused is not None:
        return refused
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    if retry_after is None:
        # OpenAI also sends this header with milliseconds.
        ms = resp.headers.get("retry-after-ms")
        if ms:
            try:
                retry_after = float(ms) / 1000
            except ValueError:
                retry_after = None
    return HTTPStatusError(
        provider.name,
        provider.redact(f"{provider.name} returned HTTP {resp.status}: {message}"),
        status=resp.status,
        retry_after=retry_after,
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
    if isinstance(exc, aiohttp.ClientConnectorError | H1ConnectError):
        return ConnectFailed(provider.name, provider.redact(f"cannot reach {provider.name}: {exc}"))
    return ConnectionDropped(provider.name, provider.redact(f"{provider.name} closed the connection: {exc}"))


def encode(provider: Provider, body: dict[str, Any]) -> bytes:
    """The request as JSON; a body that cannot be encoded is the request's fault, not the upstream's."""
    try:
        return jsonutil.dumps(body)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise RequestRejected(provider.name, f"the request cannot be encoded for {provider.name}: {exc}") from None


@functools.lru_cache(maxsize=256)
def _url(url: str) -> URL:
    """A provider's endpoint, parsed once (a handful per provider)."""
    return URL(url)


async def _send(provider: Provider, url: str, body: dict[str, Any]) -> Response:
    data = encode(provider, body)
    h1 = provider.h1
    try:
        if h1 is not None:
            t = provider.timeouts
            return await h1.post(_url(url), provider.h1_headers, data, connect_s=t.connect, idle_s=t.idle, total_s=t.total)
        return await provider.session.post(
            _url(url),
            data=data,
            headers=provider.headers,
            timeout=provider._client_timeout,
            proxy=provider.proxy,
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc) from None


async def post_json(provider: Provider, url: str, body: dict[str, Any]) -> Any:
    """POST ``body`` and return the decoded JSON answer (a whole answer: :func:`post` then
    :func:`read_json`, without the context manager)."""
    resp = await _send(provider, url, body)
    try:
        if resp.status >= 400:
            raise await _http_error(provider, resp)
        data = await read_json(provider, resp)
    except BaseException:
        resp.close()
        raise
    resp.release()
    return data


class post:  # lower case: it reads like the function it replaced, ``async with _http.post(...)``
    """POST ``body`` as JSON; ``async with`` gives the response if 2xx, raises UpstreamError otherwise.

    The connection goes back to the pool only when the body was read to the end; on
    any error or cancellation it is closed, so the upstream stops generating at once.
    (A class, not ``@asynccontextmanager``: every stream enters one, and a generator-based
    manager costs an async generator, its loop hooks and contextlib's frames per stream.)
    """

    __slots__ = ("_args", "_resp")

    def __init__(self, provider: Provider, url: str, body: dict[str, Any]) -> None:
        self._args = (provider, url, body)
        self._resp: Response | None = None

    async def __aenter__(self) -> Response:
        provider = self._args[0]
        resp = await _send(*self._args)
        if resp.status >= 400:
            try:
                raise await _http_error(provider, resp)
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
    """GET ``url`` with the provider's headers; the decoded JSON, or UpstreamError."""
    try:
        async with provider.session.get(url, headers=provider.headers, timeout=provider._client_timeout, proxy=provider.proxy) as resp:
            if resp.status >= 400:
                raise await _http_error(provider, resp)
            return await read_json(provider, resp)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc) from None


async def read_json(provider: Provider, resp: Response) -> Any:
    try:
        raw = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc, midstream=True) from None
    try:
        return jsonutil.loads(raw)
    except jsonutil.JSONDecodeError:
        raise ProtocolError(provider.name, f"{provider.name} sent a body that is not JSON") from None


MAX_LINE = 1 << 20  # an NDJSON line longer than this is not a streamed chunk


async def read_block(provider: Provider, resp: Response) -> bytes:
    """Whatever bytes have arrived (b"" at the end), transport errors as mid-stream UpstreamErrors."""
    try:
        return await resp.content.readany()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(provider, exc, midstream=True) from None


async def ndjson_reads(provider: Provider, resp: Response) -> AsyncIterator[list[bytes]]:
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
