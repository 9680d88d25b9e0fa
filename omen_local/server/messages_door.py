"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic Messages API.

Clients built on Anthropic's SDKs (or configured with an Anthropic base URL) reach the
same routing, limits and metering as chat: the body becomes a chat body
(``api/messages.py``), goes through ``router.complete``/``router.stream``, and the answer
comes back as a Messages ``message`` or its SSE events (``messages_encode.py``). Every
error on these paths, the edge's included, is in Anthropic's error shape.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .. import estimate, jsonutil
from ..api.messages import parse_count_tokens_request, parse_messages_request
from ..api.request import ChatRequest
from ..caller import Caller
from ..errors import OmenError
from ..providers.base import TokenCount
from ..providers.errors import UpstreamError
from ..routing.catalog import Target
from ..routing.router import Routed, Router
from ..routing.session import StreamSession
from .door_kit import (
    Turn,
    answer,
    chat_request,
    read_json,
    register_error_shape,
    router_of,
)
from .messages_encode import MessagesEncoder, error_body, message_from_completion
from .plumbing import header_text, note_of

log = logging.getLogger(__name__)

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


async def _message_turn(request: web.Request, router: Router, request_id: str) -> Turn:
    parsed = parse_messages_request(await read_json(request))
    note = note_of(request)
    note.ignored.extend(parsed.ignored)
    note.translated.extend(parsed.translated)
    req, caller, _ = chat_request(request, router, parsed.chat)
    message_id = "msg_" + request_id[4:]

    def whole(routed: Routed) -> dict[str, Any]:
        model = routed.completion.body.get("model") or routed.target.model
        return message_from_completion(routed.completion, message_id, model, thinking=parsed.thinking)

    def encoder(session: StreamSession) -> MessagesEncoder:
        return MessagesEncoder(message_id, session.target.model, thinking=parsed.thinking, input_estimate=session.prompt_estimate)

    return Turn(req, caller, whole, encoder, headers={"request-id": request_id})


async def create_message(request: web.Request) -> web.StreamResponse:
    return await answer(request, _message_turn, anthropic_error_response)


async def count_tokens(request: web.Request) -> web.Response:
    """The prompt's tokens as the model the request would go to counts them, where it can.

    Anthropic counts exactly (its count_tokens); llama-cpp-python's tokenizer counts the
    prompt's text (not the chat template's markers); elsewhere an offline estimate (about
    four characters a token). ``x-omen-token-count`` says which: ``exact``, ``tokenized``
    or ``estimated``, so a client never takes an estimate for a count.
    """
    router = router_of(request)
    _, chat = parse_count_tokens_request(await read_json(request))
    req, caller, request_id = chat_request(request, router, chat)
    if req.model != "auto":
        router.catalog.resolve(req.model)  # an unknown model is a 404, as on /v1/messages
    headers = {"request-id": request_id, "x-omen-request-id": request_id}
    counted: TokenCount | None = None
    target = _first_target(router, req, caller)
    if target is not None:
        headers.update({"x-omen-provider": header_text(target.provider), "x-omen-model": header_text(target.model)})
        provider = router.dispatcher.providers.get(target.provider)
        try:
            counted = None if provider is None else await provider.count_tokens(target.model, req.body)
        except UpstreamError as err:  # a count is advice: the estimate, marked, rather than an error
            log.info("count_tokens: %s could not count (%s); answering an estimate", target, err.message)
    if counted is None:
        counted = TokenCount(estimate.prompt_tokens(req.body), "estimated")
    headers["x-omen-token-count"] = counted.how
    return web.Response(
        body=jsonutil.dumps({"input_tokens": counted.tokens}), content_type="application/json", headers=headers
    )


def _first_target(router: Router, req: ChatRequest, caller: Caller) -> Target | None:
    """The model the request would be sent to first; None when none can take it now."""
    try:
        targets = router.planner.plan(req, caller).targets
    except OmenError:
        return None
    return targets[0] if targets else None


def add_messages_routes(app: web.Application) -> None:
    register_error_shape(app, PREFIX, anthropic_error_response)
    app.router.add_post(PREFIX, create_message)
    app.router.add_post(PREFIX + "/count_tokens", count_tokens)
