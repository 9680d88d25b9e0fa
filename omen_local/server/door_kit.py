"""What every front door shares: who is asking, the chat request, and the streaming loop.

A door translates its API's body into a chat body, parses it with the chat parser (so
aliases, hints and their validation are the same on every door), routes it with
``router.complete``/``router.stream`` and encodes the answer in its own shape. The loop
that writes a stream is the chat door's: primed stream, frames of one upstream read in
one write, an error frame and no clean end after a failure, the session finished (and
the upstream closed) whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from ..api.request import ChatRequest, parse_chat_request
from ..errors import OmenError
from ..providers.base import Chunk, UpstreamError, Usage
from ..routing.router import RequestContext, Router
from ..routing.session import StreamSession
from .app import ERROR_RENDERERS, IDENTITY, ROUTER, _headers, _read_json, _request_id

__all__ = [
    "FrameEncoder",
    "chat_request",
    "context",
    "new_request_id",
    "omen_headers",
    "read_json",
    "register_error_shape",
    "router_of",
    "stream_answer",
]

new_request_id = _request_id
read_json = _read_json
omen_headers = _headers


def register_error_shape(app: web.Application, prefix: str, render: Callable[[OmenError, str | None], web.Response]) -> None:
    """Answer every error under ``prefix`` (the edge's too: auth, Host, size) with ``render``."""
    app.setdefault(ERROR_RENDERERS, []).append((prefix, render))


def chat_request(router: Router, body: dict[str, Any]) -> ChatRequest:
    """The chat parser, exactly as the chat door calls it, on a door's translated body."""
    return parse_chat_request(body, intents=tuple(router.config.intents), providers=tuple(router.config.providers))


def context(request: web.Request, req: ChatRequest, request_id: str) -> RequestContext:
    """Who asked, from which client, for which workspace and session (hint, header, token)."""
    identity = request[IDENTITY]
    headers = request.headers
    return RequestContext(
        request_id,
        identity,
        client=headers.get("User-Agent"),
        workspace=req.hints.workspace or headers.get("x-omen-workspace") or identity.workspace,
        session=req.hints.session or headers.get("x-omen-session"),
    )


def router_of(request: web.Request) -> Router:
    return request.app[ROUTER]


class FrameEncoder(Protocol):
    """A door's stream format."""

    def start(self) -> bytes:
        """The frames before any content (written with the first content)."""

    def chunk(self, chunk: Chunk) -> bytes:
        """The frames for one normalized chunk (may be empty)."""

    def finish(self, usage: Usage) -> bytes:
        """The frames that end a whole answer."""

    def error(self, err: OmenError) -> bytes:
        """The frame that ends a broken answer."""


def usage_of(session: StreamSession) -> Usage:
    """The provider's usage, or the same estimate the meter records when it reported none."""
    return session.usage or Usage(
        prompt_tokens=session.prompt_estimate,
        completion_tokens=(session.output_chars + 3) // 4,
    )


async def stream_answer(
    request: web.Request,
    session: StreamSession,
    request_id: str,
    encoder: FrameEncoder,
    extra_headers: dict[str, str] | None = None,
) -> tuple[web.StreamResponse, str]:
    """Write ``session`` as an SSE stream in ``encoder``'s format; (response, outcome)."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **omen_headers(request_id, session.target, session.plan),
            **(extra_headers or {}),
        }
    )
    outcome = "cancelled"
    error: UpstreamError | None = None
    held: list[bytes] = [encoder.start()]  # frames waiting for the rest of their upstream read
    try:
        await resp.prepare(request)
        async for chunk in session:
            frames = encoder.chunk(chunk)
            if frames:
                held.append(frames)
            if not chunk.more and held:  # frames from one upstream read go out in one write
                await resp.write(b"".join(held))
                held.clear()
        held.append(encoder.finish(usage_of(session)))
        await resp.write(b"".join(held))
        held.clear()
        outcome = "ok"
    except UpstreamError as err:
        outcome, error = "error", err
        failure = OmenError(502, f"{err.message}; the answer above is incomplete", code="upstream_stream_error")
        try:
            await resp.write(b"".join(held) + encoder.error(failure))
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        pass  # the client went away; finish() below closes the upstream
    finally:
        await session.finish(outcome, error)
    return resp, outcome
