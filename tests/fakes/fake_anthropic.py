"""A fake Anthropic Messages API: a real aiohttp server on 127.0.0.1 speaking the public wire format.

It follows Anthropic's documented framing so that adapters are tested against bytes,
not mocks: ``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version``; JSON
``message`` objects; SSE as ``event: <name>\\ndata: <json>\\n\\n`` in the order
message_start, content_block_start, ping, content_block_delta..., content_block_stop,
message_delta, message_stop; errors as ``{"type": "error", "error": {...}, "request_id"}``
with the documented statuses. ``test_provider_anthropic`` checks this output with the
official ``anthropic`` SDK.

Tests script the next replies::

    async with FakeAnthropic() as fake:
        fake.enqueue(Reply([Text("Hi")]), http_error(529))
        ... point a client at fake.url ...
        fake.requests[0].body["max_tokens"]

Every request is recorded (even rejected ones). With an empty queue the fake answers
with :attr:`FakeAnthropic.default`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.waiting import DEADLINE_S

DEFAULT_KEY = "sk-ant-test-123"

# Documented error type per status, with a typical message.
ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "invalid_request_error",
        "There was an issue with the format or content of your request.",
    ),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}


@dataclass
class Text:
    """A text block; a string is streamed word by word, a list piece by piece."""

    text: str | list[str]

    def pieces(self) -> list[str]:
        if isinstance(self.text, list):
            return self.text
        return re.findall(r"\s*\S+|\s+", self.text) or [self.text]

    @property
    def full(self) -> str:
        return "".join(self.pieces())


@dataclass
class ToolUse:
    """A tool_use block; its input JSON is streamed in ``parts`` input_json_delta pieces."""

    name: str
    input: dict[str, Any]
    id: str | None = None
    parts: int = 3

    def pieces(self) -> list[str]:
        raw = json.dumps(self.input)
        size = max(1, -(-len(raw) // max(1, self.parts)))
        # The real API opens every tool_use with an empty partial_json.
        return ["", *(raw[i : i + size] for i in range(0, len(raw), size))]


@dataclass
class Thinking:
    """A thinking block, streamed as thinking_delta pieces then one signature_delta."""

    thinking: str | list[str]
    signature: str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"

    def pieces(self) -> list[str]:
        return Text(self.thinking).pieces()

    @property
    def full(self) -> str:
        return "".join(self.pieces())


Block = Text | ToolUse | Thinking


@dataclass
class Reply:
    """What the fake answers to one request.

    ``error_after``/``close_after``/``end_after`` count content_block_delta events: after
    that many, the stream gets an ``event: error``, the connection is cut without a
    proper end, or the body ends cleanly but without message_delta/message_stop.
    ``delay`` holds back the first byte; ``delta_delay`` spaces the deltas.
    """

    content: list[Block] = field(default_factory=lambda: [Text("Hello from the fake.")])
    stop_reason: str | None = None
    stop_sequence: str | None = None
    model: str | None = None
    input_tokens: int = 12
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    delay: float = 0.0
    delta_delay: float = 0.0
    error_after: int | None = None
    error_type: str = "overloaded_error"
    error_message: str = "Overloaded"
    close_after: int | None = None
    end_after: int | None = None
    http_status: int | None = None
    http_error_type: str | None = None
    http_error_message: str | None = None
    retry_after: str | None = None

    @property
    def final_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"

    @property
    def final_output_tokens(self) -> int:
        if self.output_tokens is not None:
            return self.output_tokens
        return max(1, sum(len(b.pieces()) for b in self.content))


def text_reply(text: str | list[str], **kw: Any) -> Reply:
    return Reply(content=[Text(text)], **kw)


def tool_reply(name: str, input: dict[str, Any], *, text: str | None = None, **kw: Any) -> Reply:
    blocks: list[Block] = [Text(text)] if text else []
    blocks.append(ToolUse(name, input, id=kw.pop("tool_id", None), parts=kw.pop("parts", 3)))
    return Reply(content=blocks, **kw)


def http_error(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    retry_after: str | None = None,
) -> Reply:
    if status == 429 and retry_after is None:
        retry_after = "7"
    return Reply(
        http_status=status,
        http_error_type=error_type,
        http_error_message=message,
        retry_after=retry_after,
    )


@dataclass
class Received:
    """One request as the fake saw it.

    ``closed_at`` (``time.perf_counter()``) is set when the connection went away before
    the answer was complete, so tests can check that a client cancels upstream work.
    """

    method: str
    path: str
    headers: CIMultiDict[str]
    raw: bytes
    body: Any
    closed_at: float | None = None
    finished: bool = False


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _check_body(body: Any) -> None:
    """The request validation the real API documents, enough to catch translation bugs."""
    if not isinstance(body, dict):
        raise _BadRequest(
            400, "There was an issue with the format or content of your request body."
        )
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise _BadRequest(400, f"{key}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise _BadRequest(
            400, "max_tokens: Input should be a valid integer greater than or equal to 1"
        )
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _BadRequest(400, "messages: at least one message is required")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "system":
            raise _BadRequest(
                400,
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.',
            )
        if role not in ("user", "assistant"):
            raise _BadRequest(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _BadRequest(400, f"messages.{i}.content: Input should be a valid list")
        for j, block in enumerate(blocks):
            if (
                block.get("type") == "text"
                and not block.get("text")
                and not (i == len(messages) - 1 and role == "assistant")
            ):
                raise _BadRequest(
                    400, f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
                )
        if role == "assistant":
            uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            if uses:
                nxt = messages[i + 1] if i + 1 < len(messages) else None
                results = []
                if isinstance(nxt, dict) and isinstance(nxt.get("content"), list):
                    for b in nxt["content"]:
                        if b.get("type") != "tool_result":
                            break
                        results.append(b.get("tool_use_id"))
                missing = [u for u in uses if u not in results]
                if missing:
                    raise _BadRequest(
                        400,
                        f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                        f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message.",
                    )


COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def fake_token_count(body: dict[str, Any]) -> int:
    """The fake's tokenizer: one token per whitespace-separated word of the system prompt, the
    messages' text blocks and the tools' JSON, plus 3 per message (deterministic, and unlike
    OMEN's four-characters-a-token estimate, so a test can tell a count from an estimate)."""
    words = 0
    system = body.get("system")
    blocks: list[Any] = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks += [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        words += 3
    for b in blocks:
        if isinstance(b, dict) and isinstance(b.get("text"), str):
            words += len(b["text"].split())
    if body.get("tools"):
        words += len(json.dumps(body["tools"]).split())
    return words


BETA_FIELDS = {"context_management": "context-management-2025-06-27"}
"""Body fields the API takes only with a beta named in ``anthropic-beta`` (a comma-separated list)."""


def _check_betas(body: dict[str, Any], header: str) -> None:
    betas = {b.strip() for b in header.split(",")}
    for name, beta in BETA_FIELDS.items():
        if name in body and beta not in betas:
            raise _BadRequest(400, f"{name}: Extra inputs are not permitted")


class FakeAnthropic:
    """The fake server; use as ``async with FakeAnthropic() as fake``."""

    def __init__(self, api_key: str = DEFAULT_KEY, *, accept_bearer: bool = False) -> None:
        """``accept_bearer`` also takes ``Authorization: Bearer <key>``, which recent official
        SDKs send instead of ``x-api-key``; adapters are held to ``x-api-key``."""
        self.api_key = api_key
        self.accept_bearer = accept_bearer
        self.model_ids = ["claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929"]
        self.bind = ("127.0.0.1", 0)
        self.ssl: ssl.SSLContext | None = None  # serve HTTPS with this (tests/conftest.py: a test CA's)
        self.requests: list[Received] = []
        self.default = Reply()
        self._queue: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---------------------------------------------------------------- control

    def enqueue(self, *replies: Reply) -> None:
        """Script the next requests' answers, in order."""
        self._queue.extend(replies)

    @property
    def last(self) -> Received:
        return self.requests[-1]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.1, handler_cancellation=True, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, *self.bind, ssl_context=self.ssl)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if self.ssl else 'http'}://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- server

    def _error(
        self, status: int, error_type: str | None = None, message: str | None = None
    ) -> web.Response:
        default_type, default_message = ERRORS.get(status, ("api_error", "Internal server error"))
        body = {
            "type": "error",
            "error": {"type": error_type or default_type, "message": message or default_message},
            "request_id": f"req_fake{next(self._ids):06d}",
        }
        return web.json_response(body, status=status)

    def _message(self, reply: Reply, model: str, *, streaming: bool) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if not streaming:
            for block in reply.content:
                content.append(self._block(block, complete=True))
        return {
            "id": f"msg_fake{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or model,
            "content": content,
            "stop_reason": None if streaming else reply.final_stop_reason,
            "stop_sequence": None if streaming else reply.stop_sequence,
            "usage": {
                "input_tokens": reply.input_tokens,
                "cache_creation_input_tokens": reply.cache_creation_input_tokens,
                "cache_read_input_tokens": reply.cache_read_input_tokens,
                "output_tokens": 1 if streaming else reply.final_output_tokens,
            },
        }

    def _block(self, block: Block, *, complete: bool) -> dict[str, Any]:
        if isinstance(block, Text):
            return {"type": "text", "text": block.full if complete else ""}
        if isinstance(block, Thinking):
            return {
                "type": "thinking",
                "thinking": block.full if complete else "",
                "signature": block.signature if complete else "",
            }
        if block.id is None:
            block.id = f"toolu_fake{next(self._ids):06d}"
        return {
            "type": "tool_use",
            "id": block.id,
            "name": block.name,
            "input": block.input if complete else {},
        }

    async def wait_closed(self, seen: Received, within: float = DEADLINE_S) -> float:
        """Wait until ``seen``'s connection went away; return when that happened (``within``
        only bounds a failure: a test that needs "at once" compares the time returned)."""
        deadline = time.perf_counter() + within
        while seen.closed_at is None and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        assert seen.closed_at is not None, "the client never closed the upstream connection"
        return seen.closed_at

    async def _models(self, request: web.Request) -> web.Response:
        """GET /v1/models: the Models API's list page (newest first)."""
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401)
        if not request.headers.get("anthropic-version"):
            return self._error(400, message="anthropic-version: header is required")
        data = [
            {"type": "model", "id": m, "display_name": m.replace("-", " ").title(), "created_at": "2025-10-01T00:00:00Z"}
            for m in self.model_ids
        ]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
             "last_id": data[-1]["id"] if data else None}
        )

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``. The body takes only
        model, messages, system, tools, tool_choice and thinking (anything else is a 400, as
        the API's validation answers extra fields); the count is :func:`fake_token_count`."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(Received(request.method, request.path, CIMultiDict(request.headers), raw, body, finished=True))
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401)
        if not request.headers.get("anthropic-version"):
            return self._error(400, message="anthropic-version: header is required")
        if not isinstance(body, dict):
            return self._error(400, message="There was an issue with the format or content of your request body.")
        for key in ("model", "messages"):
            if key not in body:
                return self._error(400, message=f"{key}: Field required")
        extra = sorted(set(body) - set(COUNT_FIELDS))
        if extra:
            return self._error(400, message=f"{extra[0]}: Extra inputs are not permitted")
        try:
            _check_body({**body, "max_tokens": 1})
        except _BadRequest as exc:
            return self._error(exc.status, message=exc.message)
        return web.json_response({"input_tokens": fake_token_count(body)})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        seen = Received(request.method, request.path, CIMultiDict(request.headers), raw, body)
        self.requests.append(seen)
        try:
            resp = await self._answer(request, body)
        except (asyncio.CancelledError, ConnectionResetError):
            seen.closed_at = time.perf_counter()
            raise
        seen.finished = True
        return resp

    async def _answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("Authorization", "")
        if key is None and self.accept_bearer and auth.startswith("Bearer "):
            key = auth[len("Bearer ") :]
        if key != self.api_key:
            return self._error(401)
        if not request.headers.get("anthropic-version"):
            return self._error(400, message="anthropic-version: header is required")
        try:
            _check_body(body)
            _check_betas(body, request.headers.get("anthropic-beta", ""))
        except _BadRequest as exc:
            return self._error(exc.status, message=exc.message)

        reply = self._queue.popleft() if self._queue else self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.http_status is not None:
            resp = self._error(reply.http_status, reply.http_error_type, reply.http_error_message)
            if reply.retry_after is not None:
                resp.headers["retry-after"] = reply.retry_after
            return resp
        if not body.get("stream"):
            return web.json_response(self._message(reply, body["model"], streaming=False))
        return await self._stream(request, reply, body["model"])

    async def _stream(self, request: web.Request, reply: Reply, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        resp.headers["request-id"] = f"req_fake{next(self._ids):06d}"
        await resp.prepare(request)
        sent = 0

        async def delta(index: int, payload: dict[str, Any]) -> bool:
            """Send one delta; False when the script says the stream stops here."""
            nonlocal sent
            if reply.delta_delay:
                await asyncio.sleep(reply.delta_delay)
            await resp.write(
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": payload},
                )
            )
            sent += 1
            return not self._cut_here(sent, reply)

        await resp.write(
            _sse(
                "message_start",
                {"type": "message_start", "message": self._message(reply, model, streaming=True)},
            )
        )
        for index, block in enumerate(reply.content):
            start = {
                "type": "content_block_start",
                "index": index,
                "content_block": self._block(block, complete=False),
            }
            await resp.write(_sse("content_block_start", start))
            if index == 0:
                await resp.write(_sse("ping", {"type": "ping"}))
            for piece in block.pieces():
                if isinstance(block, Text):
                    payload = {"type": "text_delta", "text": piece}
                elif isinstance(block, Thinking):
                    payload = {"type": "thinking_delta", "thinking": piece}
                else:
                    payload = {"type": "input_json_delta", "partial_json": piece}
                if not await delta(index, payload):
                    return await self._stop(request, resp, reply)
            if isinstance(block, Thinking):
                if not await delta(
                    index, {"type": "signature_delta", "signature": block.signature}
                ):
                    return await self._stop(request, resp, reply)
            await resp.write(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        await resp.write(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": reply.final_stop_reason,
                        "stop_sequence": reply.stop_sequence,
                    },
                    "usage": {"output_tokens": reply.final_output_tokens},
                },
            )
        )
        await resp.write(_sse("message_stop", {"type": "message_stop"}))
        await resp.write_eof()
        return resp

    @staticmethod
    def _cut_here(sent: int, reply: Reply) -> bool:
        return any(
            n is not None and sent >= n
            for n in (reply.error_after, reply.close_after, reply.end_after)
        )

    async def _stop(
        self, request: web.Request, resp: web.StreamResponse, reply: Reply
    ) -> web.StreamResponse:
        """End a stream early the way the reply's script says."""
        sent_error = reply.error_after is not None
        if reply.close_after is not None and not sent_error:
            # Cut the TCP connection mid-body: the client sees an incomplete chunked body.
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if sent_error:
            error = {
                "type": "error",
                "error": {"type": reply.error_type, "message": reply.error_message},
            }
            await resp.write(_sse("error", error))
        await resp.write_eof()
        return resp
