"""``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``: the OpenAI Responses API.

Newer OpenAI SDK agents and coding CLIs reach the same routing, limits and metering as
chat: the body becomes a chat body (``api/responses.py``), goes through
``router.complete``/``router.stream``, and the answer comes back as a ``response`` object
or its typed SSE events (``responses_encode.py``). Unless ``store`` is false, a whole
answer is kept for a while (``responses_store.py``) so a later request can continue it
with ``previous_response_id``; only the same user can read it back.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .. import jsonutil
from ..api.responses import (
    ResponsesRequest,
    compaction_item,
    items_to_messages,
    parse_responses_request,
    previous_not_found,
)
from ..api.responses_compact import compacted_output, parse_compact_request
from ..errors import OmenError
from ..observe import Outcome
from ..routing.router import Routed, Router
from ..routing.session import StreamSession
from .door_kit import (
    Turn,
    answer,
    chat_request,
    omen_headers,
    read_json,
    router_of,
)
from .plumbing import IDENTITY, TOKENS, error_response, note_of, request_id_of
from .responses_encode import (
    CompactionEncoder,
    ResponsesEncoder,
    output_from_completion,
    response_object,
    status_for,
)
from .responses_store import ResponseStore

STORE: web.AppKey[ResponseStore] = web.AppKey("responses_store", ResponseStore)


def _owner(request: web.Request) -> str:
    """Whose a stored response is: the token's user *and* workspace (a workspace-bound token
    never reads another workspace's conversation), the owner's token apart from any client's."""
    ident = request[IDENTITY]
    user = "\x00owner" if request.app[TOKENS].is_owner(ident) else ident.user
    return f"{user}\x1f{ident.workspace or ''}"


def _notes(parsed: ResponsesRequest) -> dict[str, str]:
    """Headers that say what of the request no upstream saw: hosted tools, ignored fields."""
    notes: dict[str, str] = {}
    if parsed.tools.omitted:
        notes["x-omen-omitted-tools"] = ", ".join(dict.fromkeys(parsed.tools.omitted))
    if parsed.ignored:
        notes["x-omen-ignored-fields"] = ", ".join(dict.fromkeys(parsed.ignored))
    return notes


def _remember(request: web.Request, response: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Keep a whole answer, and the conversation it ends, for previous_response_id."""
    messages = items_to_messages(response["output"], "output") if response["output"] else []
    request.app[STORE].put(_owner(request), response["id"], response, [*history, *messages])


async def _response_turn(request: web.Request, router: Router, request_id: str) -> Turn:
    created = int(time.time())
    parsed = parse_responses_request(await read_json(request))
    note = note_of(request)  # the request log names what no upstream saw and what was translated
    note.ignored.extend([*parsed.ignored, *(f"tools:{kind}" for kind in dict.fromkeys(parsed.tools.omitted))])
    note.translated.extend([*parsed.tools.translated, *(["input.compaction_trigger"] if parsed.compaction else [])])
    history: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        stored = request.app[STORE].get(_owner(request), parsed.previous_response_id)
        if stored is None:
            raise previous_not_found(parsed.previous_response_id)
        history = stored.history
    echo = {**parsed.echo, "store": parsed.store}
    req, caller, _ = chat_request(request, router, parsed.chat_body(history))
    response_id = "resp_" + request_id[4:]
    streams: list[ResponsesEncoder] = []

    def whole(routed: Routed) -> dict[str, Any]:
        output, finish = output_from_completion(routed.completion, parsed.tools)
        if parsed.compaction:  # the summary, as the checkpoint item Codex keeps
            summary = "".join(i["content"][0]["text"] for i in output if i["type"] == "message")
            output, finish = [compaction_item(summary)], "stop"
        status, incomplete = status_for(finish)
        model = routed.completion.body.get("model") or routed.target.model
        body = response_object(
            response_id, created, model, echo, status=status, output=output, usage=routed.completion.usage, incomplete=incomplete
        )
        if parsed.store:
            _remember(request, body, [*history, *parsed.messages])
        return body

    def encoder(session: StreamSession) -> ResponsesEncoder:
        kind = CompactionEncoder if parsed.compaction else ResponsesEncoder
        streams.append(kind(response_id, created, session.target.model, echo, parsed.tools))
        return streams[-1]

    def streamed(outcome: Outcome) -> None:
        final = streams[-1].final if streams else None
        if outcome is Outcome.OK and parsed.store and final is not None:
            _remember(request, final, [*history, *parsed.messages])

    return Turn(req, caller, whole, encoder, headers=_notes(parsed), streamed=streamed)


async def create_response(request: web.Request) -> web.StreamResponse:
    return await answer(request, _response_turn)


async def compact_response(request: web.Request) -> web.Response:
    """``POST /v1/responses/compact`` (Codex's compaction): the history summarised by a routed
    request, answered as ``{"output": [items]}`` (api/responses_compact.py)."""
    router = router_of(request)
    request_id = request_id_of(request)
    try:
        raw = await read_json(request)
        parsed = parse_compact_request(raw)
        note = note_of(request)
        note.ignored.extend([*parsed.ignored, *(f"tools:{kind}" for kind in dict.fromkeys(parsed.tools.omitted))])
        note.translated.extend(["compact", *parsed.tools.translated])
        req, caller, _ = chat_request(request, router, parsed.chat_body([]))
        routed = await router.complete(req, caller)
        message = (routed.completion.body.get("choices") or [{}])[0].get("message") or {}
        content = message.get("content")
        summary = content if isinstance(content, str) else ""
        if not summary.strip():
            raise OmenError(
                502,
                f"{routed.target} answered the compaction request without a summary; the history was left as it was",
                code="empty_summary",
            )
        usage = routed.completion.usage
        body = {
            "id": "resp_" + request_id[4:],
            "object": "response.compaction",
            "created_at": int(time.time()),
            "model": routed.completion.body.get("model") or routed.target.model,
            "output": compacted_output(raw["input"], summary),
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": usage.cached_tokens},
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
        }
        headers = {**omen_headers(request_id, routed, req), **_notes(parsed)}
        return web.Response(body=jsonutil.dumps(body), content_type="application/json", headers=headers)
    except OmenError as err:
        return error_response(err, request_id)


def _not_found(response_id: str) -> OmenError:
    return OmenError(404, f"No response found with id '{response_id}'.", code="response_not_found", param="response_id")


async def get_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    stored = request.app[STORE].get(_owner(request), response_id)
    if stored is None:
        raise _not_found(response_id)
    return web.Response(body=jsonutil.dumps(stored.response), content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not request.app[STORE].delete(_owner(request), response_id):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")


def add_responses_routes(app: web.Application, store: ResponseStore | None = None) -> None:
    app[STORE] = store or ResponseStore()
    app.router.add_post("/v1/responses", create_response)
    app.router.add_post("/v1/responses/compact", compact_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
