"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic Messages API.

Clients built on Anthropic's SDKs (or configured with an Anthropic base URL) reach the
same routing, limits and metering as chat: the body becomes a chat body
(``api/messages.py``), goes through ``router.complete``/``router.stream``, and the answer
comes back as a Messages ``message`` or its SSE events (``messages_encode.py``). Every
error on these paths, the edge's included, is in Anthropic's error shape.
"""

from __future__ import annotations

from aiohttp import web

from .. import estimate, jsonutil
from ..api.messages import parse_count_tokens_request, parse_messages_request
from ..errors import OmenError
from .door_kit import (
    chat_request,
    omen_headers,
    read_json,
    register_error_shape,
    router_of,
    stream_answer,
)
from .messages_encode import MessagesEncoder, error_body, message_from_completion
from .plumbing import note_of, request_id_of

PREFIX = "/v1/messages"


def anthropic_error_response(err: OmenError, request_id: str | None = None) -> web.Response:
    headers = err.headers()
    if request_id:
        headers["x-omen-request-id"] = request_id
        headers["request-id"] = request_id
    return web.Response(
        status=err.status,
        body=jsonutil.dumps(error_body(err, request_id)),
        content_type="application/json",
        headers=headers,
    )


async def create_message(request: web.Request) -> web.StreamResponse:
    router = router_of(request)
    request_id = request_id_of(request)
    try:
        parsed = parse_messages_request(await read_json(request))
        note = note_of(request)
        note.ignored.extend(parsed.ignored)
        note.translated.extend(parsed.translated)
        req, caller, _ = chat_request(request, router, parsed.chat)
        message_id = "msg_" + request_id[4:]
        if not parsed.stream:
            routed = await router.complete(req, caller)
            model = routed.completion.body.get("model") or routed.target.model
            body = message_from_completion(routed.completion, message_id, model, thinking=parsed.thinking)
            return web.Response(
                body=jsonutil.dumps(body),
                content_type="application/json",
                headers={**omen_headers(request_id, routed, req), "request-id": request_id},
            )
        session = await router.stream(req, caller)
    except OmenError as err:
        return anthropic_error_response(err, request_id)
    encoder = MessagesEncoder(message_id, session.target.model, thinking=parsed.thinking, input_estimate=session.prompt_estimate)
    resp, _ = await stream_answer(request, session, request_id, req, encoder, {"request-id": request_id})
    return resp


async def count_tokens(request: web.Request) -> web.Response:
    """An offline estimate (about four characters a token), as OMEN has no tokenizers."""
    router = router_of(request)
    _, chat = parse_count_tokens_request(await read_json(request))
    req, _, _ = chat_request(request, router, chat)
    if req.model != "auto":
        router.catalog.resolve(req.model)  # an unknown model is a 404, as on /v1/messages
    return web.Response(
        body=jsonutil.dumps({"input_tokens": estimate.prompt_tokens(req.body)}),
        content_type="application/json",
    )


def add_messages_routes(app: web.Application) -> None:
    register_error_shape(app, PREFIX, anthropic_error_response)
    app.router.add_post(PREFIX, create_message)
    app.router.add_post(PREFIX + "/count_tokens", count_tokens)
