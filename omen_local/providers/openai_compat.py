"""OpenAI and every OpenAI-compatible server (OpenRouter, Groq, LM Studio, vLLM, llama.cpp).

The body passes through as is, with the model replaced and ``stream_options.include_usage``
forced on for streams so usage is always known. A stream is read a block at a time: the
SSE events of one read are decoded at once (``data`` bytes straight into the JSON
parser) into one :class:`Batch`; each chunk keeps the upstream's delta as parsed (only
``role`` is taken out) and its ``system_fingerprint``. The same holds for ``/completions``
(legacy and FIM text completions, streamed the same way) and ``/embeddings`` (always
asked for floats: the door encodes base64 itself, so every upstream's answer is read
the same way).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .. import jsonutil
from ..provider_config import ProviderConfig
from ..wire.anthropic import without_anthropic_extensions
from ..wire.tool_media import tool_media_to_user
from . import _http, _sse
from .base import (
    Batch,
    Chunk,
    Completion,
    Embeddings,
    Provider,
    Timeouts,
    TokenCount,
    Usage,
    is_loopback_url,
    prompt_text,
    unbatched,
)
from .capabilities import takes_reasoning_effort
from .dialect import DIALECTS, GENERIC, Dialect, NotSpoken, by_address, detect, shape
from .errors import (
    ConnectFailed,
    EmptyStream,
    ProtocolError,
    RequestRefused,
    StreamBroken,
    Unsupported,
    UpstreamError,
)
from .windows import llamacpp_window


class _Empty(Exception):
    """A 200 stream ended without a single byte (see ``_why_empty``)."""


DETECT_TIMEOUT_S = 2.0  # the one GET /models that asks a local server which dialect it speaks


class OpenAICompatProvider(Provider):
    kind = "openai"

    def __init__(
        self,
        config: ProviderConfig,
        session: aiohttp.ClientSession,
        *,
        key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        super().__init__(config, session, key=key, timeouts=timeouts)
        c = self.config
        self._fixed: Dialect | None = DIALECTS[c.dialect] if c.dialect else by_address(c.base_url, c.name if c.found else None)
        self._detected: Dialect | None = None
        self._asking: asyncio.Future[None] | None = None  # the one GET /models that asks a local server

    @property
    def dialect(self) -> Dialect:
        """The dialect requests are sent in: configured, else what the address or the server says."""
        return self._fixed or self._detected or GENERIC

    async def _know_dialect(self) -> None:
        """Ask a local server of unknown dialect, once, what it is (its ``/models``' ``owned_by``).

        Local servers are where dialects differ (and where a lost cap costs minutes); a
        server that does not answer in time is spoken to generically. Requests that arrive
        while the question is out wait for the same answer (one GET, shielded from any one
        request's cancellation)."""
        if self._fixed is not None or self._detected is not None or not is_loopback_url(self.config.base_url):
            return
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask())
        if not self._asking.done():
            await asyncio.shield(self._asking)

    async def _ask(self) -> None:
        try:
            data = await asyncio.wait_for(_http.get_json(self, f"{self.config.base_url}/models"), DETECT_TIMEOUT_S)
        except (ConnectFailed, TimeoutError):  # not up yet: the next request asks again
            self._asking = None
            return
        except Exception:  # best effort: a server that cannot say is spoken to generically
            return
        self._detected = detect(data)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    async def discover(self) -> list[str]:
        """Configured models, then what ``GET {base_url}/models`` lists (``discover = true``)."""
        data = await _http.get_json(self, f"{self.config.base_url}/models")
        listed = data.get("data") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise ProtocolError(self.name, f"{self.name} /models did not list models")
        self._detected = detect(data) or self._detected
        names = [m.get("id") for m in listed if isinstance(m, dict)]
        configured = [m.name for m in self.config.models]
        models = configured + [n for n in names if isinstance(n, str) and n and n not in configured]
        if self.dialect.name == "llamacpp":
            await self._read_props(models)
        return models

    async def count_tokens(self, model: str, body: dict[str, Any]) -> TokenCount | None:
        """llama-cpp-python's tokenizer (``POST /extras/tokenize/count``) over the prompt's text.

        Its server has no endpoint that renders the chat template, so the template's markers
        are not counted (``"tokenized"``, not ``"exact"``); other servers: None (an estimate)."""
        await self._know_dialect()
        if self.dialect.name != "llama-cpp-python":
            return None
        url = self.config.base_url.removesuffix("/v1") + "/extras/tokenize/count"
        async with _http.Exchange(self, url, {"input": prompt_text(body), "model": model}) as resp:
            data = await _http.read_json(self, resp)
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ProtocolError(self.name, f"{self.name} sent a token count without count")
        return TokenCount(count, "tokenized")

    async def _read_props(self, models: list[str]) -> None:
        """llama.cpp's ``/props``: the context its (one) model was loaded with, ``n_ctx``."""
        root = self.config.base_url.removesuffix("/v1")
        try:
            props = await _http.get_json(self, f"{root}/props")
        except UpstreamError:
            return
        n_ctx = llamacpp_window(props)
        if n_ctx is not None:
            self.context_windows = {m: n_ctx for m in models}

    def _body(self, model: str, body: dict[str, Any], stream: bool, *, text: bool = False) -> dict[str, Any]:
        """The request in this server's dialect; what it cannot take raises :class:`Unsupported`."""
        out = dict(without_anthropic_extensions(body))  # strict in what it sends (wire/anthropic.py)
        if isinstance(out.get("messages"), list):
            out["messages"] = tool_media_to_user(out["messages"])  # tool messages take text only
        if "reasoning_effort" in out and not takes_reasoning_effort(self.config, model):
            del out["reasoning_effort"]  # the model would refuse it (capabilities.py)
        out["model"] = model
        out["stream"] = stream
        if stream:
            opts = dict(out.get("stream_options") or {})
            opts["include_usage"] = True
            out["stream_options"] = opts
        else:
            out.pop("stream_options", None)
        dialect = self.dialect
        try:
            return shape(dialect, out, text=text)
        except NotSpoken as exc:
            raise Unsupported(self.name, f"{self.name} ({dialect.name} dialect) cannot take {exc.param}: {exc}") from None

    async def complete(self, model: str, body: dict[str, Any]) -> Completion:
        await self._know_dialect()
        data = await self._exchange_json("/chat/completions", self._body(model, body, False))
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise ProtocolError(self.name, f"{self.name} sent a completion without choices")
        data.setdefault("model", model)
        return Completion(body=data, usage=Usage.from_openai(data.get("usage")))

    def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return unbatched(self.stream_batches(model, body))

    def stream_batches(self, model: str, body: dict[str, Any], *, text: bool = False) -> AsyncIterator[Batch]:
        path = "/completions" if text else "/chat/completions"
        return self._stream(path, model, body, text=text)

    async def complete_text(self, model: str, body: dict[str, Any]) -> Completion:
        await self._know_dialect()
        data = await self._exchange_json("/completions", self._body(model, body, False, text=True))
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("text"), str):
            raise ProtocolError(self.name, f"{self.name} sent a completion without text")
        data.setdefault("model", model)
        return Completion(body=data, usage=Usage.from_openai(data.get("usage")))

    def stream_text(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return unbatched(self.stream_batches(model, body, text=True))

    async def embed(self, model: str, body: dict[str, Any]) -> Embeddings:
        request = {**body, "model": model, "encoding_format": "float"}
        data = await self._exchange_json("/embeddings", request, limit=_http.MAX_EMBEDDINGS)
        items = data.get("data") if isinstance(data, dict) else None
        vectors = _vectors(items)
        if vectors is None:
            raise ProtocolError(self.name, f"{self.name} sent embeddings OMEN cannot read")
        usage = Usage.from_openai(data["usage"]) if isinstance(data.get("usage"), dict) else None
        return Embeddings(vectors, data.get("model") or model, usage)

    async def _stream(self, path: str, model: str, body: dict[str, Any], *, text: bool) -> AsyncIterator[Batch]:
        await self._know_dialect()
        request = self._body(model, body, True, text=text)
        named: set[tuple[int, str]] = set()  # (tool call index, id/type/name) sent: llama.cpp repeats them
        try:
            async with self._exchange(path, request) as resp:
                decoder = _sse.Decoder()
                read = resp.content.readany
                loads = jsonutil.loads
                finished = ended = primed = heard = delivered = False
                head = Batch()  # chunks before the first content (the role chunk): they go out with it
                while not ended:
                    try:
                        block = await read()
                    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                        raise _http.translate(self, exc, midstream=True) from None
                    eof = not block
                    heard = heard or not eof
                    error: UpstreamError | None = None
                    if not primed and block:
                        # Until the first content, events are taken one at a time, and the first
                        # content goes out before the rest of its read is even parsed.
                        pos = 0
                        while not primed and error is None:
                            stop = block.find(b"\n\n", pos)
                            if stop < 0:
                                break
                            batch, finished, ended, error = self._translate(decoder.feed_raw(block[pos : stop + 2]), finished, text, named)
                            pos = stop + 2
                            head.extend(batch)
                            primed = ended or any(c.finish_reason is not None or c.has_content for c in batch)
                        block = block[pos:]
                        if primed or error is not None:
                            if head and not (isinstance(error, RequestRefused) and not _has_content(head)):
                                head.last = ended and error is None
                                yield head
                                delivered = True
                            head = Batch()
                            if error is not None:
                                raise self._late(error, delivered)
                        if ended or not block:
                            continue
                    items = None
                    whole = decoder.data_array(block) if block else None
                    if whole is not None:  # the usual read: whole events, one parse for all of them
                        try:
                            items = loads(whole[0])
                        except jsonutil.JSONDecodeError:
                            items = None  # find the bad one event by event
                        if items is not None and len(items) != whole[2]:
                            items = None  # an event held more than one value: the event parser says so
                    if items is not None and whole is not None:
                        batch, finished, ended, error = self._chunks(items, finished, text, whole[1], named)
                    else:
                        events = decoder.feed_raw(block) if block else decoder.close_raw()
                        batch, finished, ended, error = self._translate(events, finished, text, named)
                    ended = ended or eof
                    if head and (primed or ended or error is not None or batch):  # held for the first content
                        batch[0:0] = head
                        head = Batch()
                    if batch and not (isinstance(error, RequestRefused) and not delivered and not _has_content(batch)):
                        primed = True
                        batch.last = ended and error is None
                        yield batch
                        delivered = True
                    if error is not None:
                        raise self._late(error, delivered)
                if not finished:
                    if not heard:
                        raise _Empty
                    raise StreamBroken(self.name, f"{self.name} ended the stream before it was complete")
        except _Empty:  # raised inside the response's context: its connection is closed, not reused
            raise await self._why_empty(path, request) from None

    def _late(self, error: UpstreamError, delivered: bool) -> UpstreamError:
        """A refusal after part of the answer reached the client cannot be tried elsewhere:
        the stream broke, with the upstream's words."""
        if isinstance(error, RequestRefused) and delivered:
            return StreamBroken(self.name, error.message)
        return error

    async def _why_empty(self, path: str, request: dict[str, Any]) -> UpstreamError:
        """The error for a 200 stream that ended without a single event.

        Servers that cannot start a stream (llama-cpp-python over its context, or with a
        chat template that cannot render the messages) answer 200 and close. Such a
        server on this machine is asked the same request unstreamed, for one token, so it
        says why (its refusal is then the request's, not the model's). Only that server:
        anything else on loopback (a LiteLLM gateway) may bill the prompt again."""
        empty = EmptyStream(self.name, f"{self.name} ended the stream without sending anything")
        if self.dialect.name != "llama-cpp-python" or not is_loopback_url(self.config.base_url):
            return empty
        probe = {k: v for k, v in request.items() if k not in ("stream", "stream_options", "max_tokens", "max_completion_tokens")}
        probe[self.dialect.cap] = 1
        try:
            await self._exchange_json(path, probe)
        except RequestRefused as refused:
            return refused
        except UpstreamError as err:
            empty.message = f"{empty.message}; unstreamed it says: {err.message}"
            empty.args = (empty.message,)
        return empty

    def _translate(
        self, events: list[tuple[str, bytes]], finished: bool, text: bool = False, named: set[tuple[int, str]] | None = None
    ) -> tuple[Batch, bool, bool, UpstreamError | None]:
        """The chunks of one read's events: (chunks, finished, [DONE] seen, error to raise after them).

        ``text``: legacy completion chunks, whose ``choices[0].text`` becomes ``delta.content``.
        """
        items: list[Any] = []
        loads = jsonutil.loads
        for name, payload in events:
            if payload == b"[DONE]":
                return self._chunks(items, finished, text, True, named)
            try:
                item = loads(payload)
            except jsonutil.JSONDecodeError:
                try:  # text that is not UTF-8 is read as the line parser reads it: replaced
                    item = loads(payload.decode("utf-8", "replace"))
                except jsonutil.JSONDecodeError:
                    if name == "error":  # llama.cpp's ``error:`` line, not JSON: its text is the message
                        item = payload.decode("utf-8", "replace")
                    else:
                        batch, finished, _, error = self._chunks(items, finished, text, False, named)
                        return batch, finished, True, error or ProtocolError(self.name, f"{self.name} sent a chunk that is not JSON")
            if name == "error" and not (type(item) is dict and "error" in item):
                item = {"error": item}  # llama.cpp's ``error: {...}``: the same as ``data: {"error": {...}}``
            items.append(item)
        return self._chunks(items, finished, text, False, named)

    def _chunks(
        self, items: list[Any], finished: bool, text: bool, done: bool, named: set[tuple[int, str]] | None = None
    ) -> tuple[Batch, bool, bool, UpstreamError | None]:
        """Chunks from the decoded events of one read (``done``: [DONE] came after them).

        ``named``: (index, field) of the tool-call ids, types and names that already went out; a server
        that repeats them in later deltas would have clients assemble ``get_weatherget_weather``."""
        out = Batch()
        for data in items:
            if type(data) is not dict:
                continue
            err = data.get("error")
            if err is not None:
                # The upstream says why the stream failed (llama.cpp: the prompt is over its
                # context): a refusal the request caused is the request's (RequestRefused,
                # another candidate may take it), said to the client either way.
                message = _http.error_message(data) or "error event"
                code = err.get("code") if type(err) is dict else None
                status = code if type(code) is int and 400 <= code < 600 else 500
                refused = _http.refusal_error(self, status, message, data)
                return out, finished, True, refused or StreamBroken(self.name, self.redact(f"{self.name}: {message}"))
            try:
                raw_usage = data.get("usage")
                usage = Usage.from_openai(raw_usage) if raw_usage else None
                choices = data.get("choices")
                if not choices:
                    if usage is not None:
                        out.append(Chunk(usage=usage))
                    continue
                choice = choices[0]
                if text:
                    piece = choice.get("text")
                    delta: dict[str, Any] = {"content": piece} if isinstance(piece, str) and piece else {}
                else:
                    delta = choice.get("delta") or {}
                    if type(delta) is not dict:
                        raise TypeError(f"delta is {type(delta).__name__}, not an object")
                    if "role" in delta:
                        del delta["role"]
                    if named is not None and type(delta.get("tool_calls")) is list:
                        delta["tool_calls"] = [_once(call, named) for call in delta["tool_calls"]]
                reason = choice.get("finish_reason")
            except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
                # The chunks before it still go out; then the stream ends as broken.
                error = ProtocolError(self.name, f"{self.name} sent a chunk OMEN cannot read ({exc})")
                return out, finished, True, error
            if reason is not None:
                finished = True
            fingerprint = data.get("system_fingerprint")
            out.append(Chunk(delta, reason, usage, None, False, fingerprint if type(fingerprint) is str else None))
        return out, finished, done, None


def _has_content(batch: Batch) -> bool:
    return any(c.has_content or c.finish_reason is not None for c in batch)


def _once(call: Any, named: set[tuple[int, str]]) -> Any:
    """A streamed tool-call delta with its ``id``, ``type`` and ``function.name`` each sent
    only the first time they come for its index."""
    if type(call) is not dict:
        return call
    index = call.get("index", 0)
    out = None
    for key in ("id", "type"):
        if call.get(key):
            if (index, key) in named:
                out = out if out is not None else dict(call)
                del out[key]
            else:
                named.add((index, key))
    fn = call.get("function")
    if type(fn) is dict and fn.get("name"):
        if (index, "name") in named:
            out = out if out is not None else dict(call)
            out["function"] = {k: v for k, v in fn.items() if k != "name"}
        else:
            named.add((index, "name"))
    return call if out is None else out


def _vector(value: Any) -> list[float] | None:
    """One embedding: a list of numbers, or base64 little-endian float32 (some servers send it anyway)."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            return None
        if len(raw) % 4:
            return None
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        return [float(x) for x in value]
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        # One vector per token (llama-cpp-python without pooling): mean-pooled into one, as
        # a pooling server would.
        rows = [_vector(row) for row in value]
        if any(r is None for r in rows) or len({len(r) for r in rows if r is not None}) != 1:
            return None
        width = len(rows[0] or ())
        return [sum(r[i] for r in rows if r is not None) / len(rows) for i in range(width)]
    return None


def _vectors(items: Any) -> list[list[float]] | None:
    """The ``data`` of an embeddings answer as vectors in input order, or None if unreadable."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return None
    indexed = sorted(items, key=lambda i: i.get("index") if isinstance(i.get("index"), int) else 0)
    out = []
    for item in indexed:
        vector = _vector(item.get("embedding"))
        if vector is None:
            return None
        out.append(vector)
    return out
