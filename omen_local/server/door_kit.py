"""What every front door shares: who is asking, the chat request, and the streaming loop.

A door translates its API's body into a chat body, parses it with the chat parser (so
aliases, hints and their validation are the same on every door), routes it with
``router.complete``/``router.stream`` and encodes the answer in its own shape. The loop
that writes a stream is the chat door's: primed stream, frames of one upstream read in
one write, an error frame and no clean end after a failure, the session finished (and
the upstream closed) whatever happens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from .. import jsonutil
from ..api.request import ChatRequest
from ..caller import Caller
from ..errors import OmenError
from ..observe import Outcome
from ..providers.base import Batch, Usage
from ..providers.errors import UpstreamError
from ..routing.router import Embedded, Routed, Router
from ..routing.session import StreamSession
from .plumbing import (
    ERROR_RENDERERS,
    ROUTER,
    error_response,
    omen_headers_of,
    read_json,
    request_id_of,
    routed_request,
)

__all__ = [
    "FrameEncoder",
    "Turn",
    "answer",
    "chat_request",
    "omen_headers",
    "read_json",
    "register_error_shape",
    "router_of",
    "stream_answer",
]


def omen_headers(request_id: str, answer: StreamSession | Routed | Embedded, req: ChatRequest) -> dict[str, str]:
    """The x-omen-* headers of an answer, as the chat door sends them."""
    headers = omen_headers_of(request_id, answer.target, answer.plan, req.alias, req.asked)
    if isinstance(answer, Routed | Embedded):
        headers["x-omen-cost-usd"] = f"{answer.cost_usd:.8f}"
    return headers


def register_error_shape(app: web.Application, prefix: str, render: Callable[[OmenError, str | None], web.Response]) -> None:
    """Answer every error under ``prefix`` (the edge's too: auth, Host, size) with ``render``."""
    app.setdefault(ERROR_RENDERERS, []).append((prefix, render))


def chat_request(request: web.Request, router: Router, body: dict[str, Any]) -> tuple[ChatRequest, Caller, str]:
    """A door's translated body through the chat door's own path: the parser, alias, header and
    body hints, the workspace check, the caller. (request, caller, request id)."""
    return routed_request(body, request, router.config)


def router_of(request: web.Request) -> Router:
    return request.app[ROUTER].get()


class FrameEncoder(Protocol):
    """A door's stream format."""

    def start(self) -> bytes:
        """The frames before any content (written with the first content)."""

    def frames(self, batch: Batch) -> bytes:
        """The frames for one upstream read's chunks, joined (may be empty)."""

    def finish(self, usage: Usage) -> bytes:
        """The frames that end a whole answer."""

    def error(self, err: OmenError) -> bytes:
        """The frame that ends a broken answer."""


async def stream_answer(
    request: web.Request,
    session: StreamSession,
    request_id: str,
    req: ChatRequest,
    encoder: FrameEncoder,
    extra_headers: dict[str, str] | None = None,
) -> tuple[web.StreamResponse, Outcome]:
    """Write ``session`` as an SSE stream in ``encoder``'s format; (response, outcome)."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **omen_headers(request_id, session, req),
            **(extra_headers or {}),
        }
    )
    outcome = Outcome.CANCELLED
    error: UpstreamError | None = None
    start = encoder.start()
    held: list[bytes] = [start] if start else []  # frames not written yet (the start waits for content)
    try:
        await resp.prepare(request)
        async for batch in session.batches():
            frames = encoder.frames(batch)
            if frames:
                held.append(frames)
            if held and not batch.last:  # frames from one upstream read go out in one write
                await resp.write(b"".join(held))
                held.clear()
        usage, _ = session.usage_or_estimate()  # the provider's count, or the meter's own estimate
        held.append(encoder.finish(usage))
        await resp.write_eof(b"".join(held))
        held.clear()
        outcome = Outcome.OK
    except UpstreamError as err:
        outcome, error = Outcome.ERROR, err
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


@dataclass(slots=True)
class Turn:
    """One request as a door hands it to :func:`answer`: the parsed request and what the door
    does with an answer (its JSON for a whole one, its encoder for a stream)."""

    req: ChatRequest
    caller: Caller
    whole: Callable[[Routed], dict[str, Any]]  # a whole answer's body in the door's shape
    encoder: Callable[[StreamSession], FrameEncoder]  # a stream's format
    headers: dict[str, str] = field(default_factory=dict)  # the door's own, on both kinds of answer
    streamed: Callable[[Outcome], None] | None = None  # told how a stream ended (after the last write)


Prepare = Callable[[web.Request, Router, str], Awaitable[Turn]]
Render = Callable[[OmenError, str | None], web.Response]


async def answer(request: web.Request, prepare: Prepare, render: Render = error_response) -> web.StreamResponse:
    """The skeleton every chat-like door runs: ``prepare`` parses the body into a :class:`Turn`
    (hints, caller and all), then a whole answer or a stream; an error before the answer
    starts is rendered in the door's shape (``render``), one during a stream by its encoder."""
    router = router_of(request)
    request_id = request_id_of(request)
    try:
        turn = await prepare(request, router, request_id)
        req = turn.req
        if not req.stream:
            routed = await router.complete(req, turn.caller)
            body = jsonutil.dumps(turn.whole(routed))
            headers = {**omen_headers(request_id, routed, req), **turn.headers}
            return web.Response(body=body, content_type="application/json", headers=headers)
        session = await router.stream(req, turn.caller)
    except OmenError as err:
        return render(err, request_id)
    resp, outcome = await stream_answer(request, session, request_id, req, turn.encoder(session), turn.headers)
    if turn.streamed is not None:
        turn.streamed(outcome)
    return resp
