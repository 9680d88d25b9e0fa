"""``POST /v1/completions`` (legacy completions, fill-in-the-middle) and ``POST /v1/embeddings``.

Both go through the same routing as chat: the door's parser, then every hint layer and
the caller (``with_hints``), then the router with the request's ``op``, which picks the
intent bucket (``complete``, ``embed``), the upstream call and the prompt estimate.
Autocomplete cancels constantly: a client that leaves cancels the handler, and with it
the upstream request (aiohttp's handler cancellation), at once.
"""

from __future__ import annotations

from aiohttp import web

from .. import estimate, jsonutil
from ..api.completions import parse_completion_request
from ..api.embeddings import parse_embeddings_request
from ..api.request import ChatRequest, Operation
from ..errors import OmenError
from ..providers.base import Usage
from ..routing.router import Router
from .completions_encode import CompletionEncoder, completion_body
from .door_kit import Turn, answer, omen_headers, router_of
from .embeddings_encode import embeddings_body
from .plumbing import error_response, read_json, request_id_of, with_hints


async def _completion_turn(request: web.Request, router: Router, request_id: str) -> Turn:
    config = router.config
    parsed = parse_completion_request(await read_json(request), intents=tuple(config.intents), providers=tuple(config.providers))
    req = ChatRequest(parsed.model, parsed.body, parsed.stream, parsed.include_usage, parsed.hints, op=Operation.TEXT)
    req, caller, _ = with_hints(req, request, config)
    completion_id = "cmpl-" + request_id[4:]
    return Turn(
        req, caller,
        whole=lambda routed: completion_body(routed.completion, completion_id, routed.target.model),
        encoder=lambda session: CompletionEncoder(completion_id, session.target.model, include_usage=req.include_usage),
    )  # fmt: skip


async def completions(request: web.Request) -> web.StreamResponse:
    return await answer(request, _completion_turn)


async def embeddings(request: web.Request) -> web.Response:
    router = router_of(request)
    config = router.config
    request_id = request_id_of(request)
    try:
        raw = await read_json(request)
        parsed = parse_embeddings_request(raw, intents=tuple(config.intents), providers=tuple(config.providers))
        req = ChatRequest(parsed.model, parsed.body, False, False, parsed.hints, op=Operation.EMBED)
        req, caller, _ = with_hints(req, request, config)
        done = await router.embed(req, caller)
    except OmenError as err:
        return error_response(err, request_id)
    vectors = done.embeddings.vectors
    if len(vectors) != parsed.count:
        wrong = OmenError(502, f"{done.target} returned {len(vectors)} vectors for {parsed.count} inputs", code="upstream_error")
        return error_response(wrong, request_id)
    # The provider's count, else the same estimate the meter recorded.
    usage = done.embeddings.usage or Usage(estimate.embed_input_tokens(req.body))
    body = embeddings_body(done.embeddings, encoding_format=parsed.encoding_format, usage=usage)
    return web.Response(body=jsonutil.dumps(body), content_type="application/json", headers=omen_headers(request_id, done, req))


def add_text_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
