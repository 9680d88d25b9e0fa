"""Request plumbing every door shares: app keys, request ids, error rendering, body reading,
hints, the ``x-omen-*`` headers.

Its own module so that the doors and :mod:`.app` (which assembles them) both import it
and nothing imports ``app``: the server package's import graph has no cycle
(tests/test_import_graph.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import jsonutil
from ..api.hints import NO_HINTS, alias_hints, combine, header_hints
from ..api.model_map import cap_header, mapped_name
from ..api.request import ChatRequest, parse_chat_request
from ..caller import Caller
from ..config import Config
from ..errors import OmenError, invalid
from ..providers.errors import TeamBooksUnknown
from ..requestlog import RequestNote
from ..routing.catalog import Target
from ..routing.planner import Plan
from ..routing.router import Router
from ..tokens import Identity, TokenBook, reserved_user

CLIENT_MAX_CHARS = 256  # a User-Agent longer than this is cut (it is stored with every usage event)
INSTANCE_MAX_CHARS = 200  # an instance name, as [team] instance allows


class RouterRef:
    """The router requests use now; the service swaps it when the config is reloaded."""

    __slots__ = ("_router",)

    def __init__(self) -> None:
        self._router: Router | None = None

    def get(self) -> Router:
        if self._router is None:
            raise LookupError("the router is not built yet")
        return self._router

    def set(self, router: Router) -> None:
        self._router = router


ROUTER: web.AppKey[RouterRef] = web.AppKey("router", RouterRef)

TOKENS: web.AppKey[TokenBook] = web.AppKey("tokens", TokenBook)

STATUS: web.AppKey[Any] = web.AppKey("status", object)

RELOAD: web.AppKey[Any] = web.AppKey("reload", object)

HELLO: web.AppKey[Any] = web.AppKey("hello", object)
# A team gateway (``omen serve --team``): it takes ``X-Omen-Instance`` from teammates' laptops.
RELAYS: web.AppKey[bool] = web.AppKey("relays", bool)
# The id of the team books this instance writes (PostgreSQL's ``usage_meta.team_id``); "" when
# it keeps no team's books, None while it has not read them (other_books).
BOOKS: web.AppKey[Callable[[], str | None]] = web.AppKey("books")


IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

NOTE: web.RequestKey[RequestNote] = web.RequestKey("request_note", RequestNote)


ErrorRenderer = Callable[[OmenError, str | None], web.Response]

# (path prefix, renderer): doors whose API has its own error shape (door_kit.register_error_shape).

ERROR_RENDERERS: web.AppKey[list[tuple[str, ErrorRenderer]]] = web.AppKey("error_renderers", list)


def error_response(err: OmenError, request_id: str | None = None) -> web.Response:
    headers = err.headers()
    if request_id:
        headers["x-omen-request-id"] = request_id
    return web.Response(
        status=err.status,
        body=jsonutil.dumps(err.body()),
        content_type="application/json",
        headers=headers,
    )


def render_error(request: web.Request, err: OmenError, request_id: str | None = None) -> web.Response:
    """``err`` in the shape of the door the request came to (OpenAI's unless the door has its own)."""
    request_id = request_id or request.get(REQUEST_ID)
    path = request.path
    for prefix, render in request.app.get(ERROR_RENDERERS, ()):
        if path == prefix or path.startswith(prefix + "/"):
            return render(err, request_id)
    return error_response(err, request_id)


def note_of(request: web.Request) -> RequestNote:
    """The request log's note for this request (a throwaway one when the log is off)."""
    note = request.get(NOTE)
    if note is None:
        note = RequestNote()
        request[NOTE] = note
    return note


_ID_PREFIX = os.urandom(6).hex()  # this process's; the counter makes ids unique within it

_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """A request id, unique across processes and restarts (random prefix) without a syscall each."""
    return f"req_{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def request_id_of(request: web.Request) -> str:
    """The id the edge gave this request (every answer, errors included, carries it)."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = request[REQUEST_ID] = new_request_id()
    return rid


def relayed_by(header: str | None) -> str | None:
    """The teammate's instance a request came through (a team gateway's laptop, percent-encoded
    by omen_local/gateway.py): a label for the books, cleaned like any client text."""
    if not header:
        return None
    return clean_text(urllib.parse.unquote(header), INSTANCE_MAX_CHARS)


def relays_for(request: web.Request, identity: Identity) -> bool:
    """Whether ``X-Omen-Instance`` names the books' instance: only on a team gateway and only
    from a client token (a teammate's laptop); elsewhere, and for the owner or the endpoint
    file's token, the row's instance is this instance's own name."""
    return RELAYS in request.app and request.app[RELAYS] and not reserved_user(identity.user)


def other_books(request: web.Request) -> OmenError | None:
    """The refusal of a request from an OMEN on a team (``X-Omen-Team``: its books' id) when
    this instance keeps other books (another team's, or only its own: ``BOOKS`` gives ""), or
    does not know its own yet (a first start while PostgreSQL is away: ``BOOKS`` gives None).
    That OMEN leaves what it sends through a gateway to the gateway's books, so served here,
    the request would never be in its team's books."""
    theirs = request.headers.get("X-Omen-Team")  # providers/omen_gateway.TEAM_HEADER (imported, a cycle)
    books = request.app.get(BOOKS)
    if not theirs or books is None:
        return None
    ours = books()
    if ours == theirs:
        return None
    if ours is None:
        return OmenError(503, "this OMEN has not read its team's usage books yet (PostgreSQL has not answered "
                              "since it started): it cannot tell whether they are yours; try again shortly",
                         code="team_books_unknown", retry_after=TeamBooksUnknown.RETRY_S)
    if ours:
        why = ("this OMEN keeps another team's usage books, and the OMEN that sent the request is on a team: "
               "served here, the request would never be in that team's books. Send through your own team's "
               "gateway, or use this one from an OMEN without [team]")
    else:
        why = ("this OMEN keeps no team's usage books (it has no [team]), and the OMEN that sent the request "
               "is on a team and leaves what it sends through a gateway to the gateway's books. To use it from "
               'there, configure it as kind = "openai" with dialect = "generic" (that OMEN then meters it)')
    return OmenError(409, why + " (docs/team.md)", code="team_mismatch", type="invalid_request_error")


def clean_text(value: str | None, limit: int = CLIENT_MAX_CHARS) -> str | None:
    """A client-supplied header as text every store can keep: valid UTF-8, printable, bounded.

    aiohttp decodes header bytes that are not UTF-8 into lone surrogates, which JSON
    encoders and SQLite refuse; a field the client controls must never cost a usage record.
    """
    if value is None:
        return None
    if value.isascii() and value.isprintable():  # what clients send: nothing to clean
        return value[:limit] or None
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text[:limit] or None

async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPException:
        raise
    except Exception as exc:  # truncated or broken body
        raise invalid(f"could not read the request body: {type(exc).__name__}") from None
    if not raw:
        raise invalid("the request body is empty; send a JSON object")
    try:
        return jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None


def routed_request(raw: Any, request: web.Request, config: Config) -> tuple[ChatRequest, Caller, str]:
    """A validated chat request with its hints (alias, then headers, then body) and its caller.

    Returns the request id too, so every answer, errors included, can carry it.
    """
    req = parse_chat_request(raw, intents=tuple(config.intents), providers=tuple(config.providers))
    return with_hints(req, request, config)


def _served(request: web.Request, name: str) -> bool:
    """Whether a usable provider serves the model ``name`` exactly."""
    try:
        return bool(request.app[ROUTER].get().catalog.resolve(name))
    except (OmenError, LookupError):
        return False


def with_hints(req: ChatRequest, request: web.Request, config: Config) -> tuple[ChatRequest, Caller, str]:
    """Any door's parsed request with every hint layer applied (alias, then headers, then the
    body's), the token's workspace enforced, and its caller; the request id too."""
    mapped = mapped_name(req.model, config, lambda name: _served(request, name))
    note = note_of(request)
    note.asked = req.model
    if mapped is not None:
        req = dataclasses.replace(req, model=mapped, asked=req.model)
    alias = config.aliases.get(req.model)
    headed = header_hints(request.headers, intents=tuple(config.intents), providers=tuple(config.providers))
    if alias is not None or headed is not NO_HINTS:  # else the body's hints are all there is
        layers = [alias_hints(alias)] if alias is not None else []
        layers += [headed, req.hints]
        req = dataclasses.replace(
            req,
            model="auto" if alias is not None else req.model,
            hints=combine(*layers),
            alias=alias.name if alias is not None else None,
        )
    identity: Identity = request[IDENTITY]
    workspace = req.hints.workspace
    if identity.workspace is not None and workspace is not None and workspace != identity.workspace:
        raise OmenError(
            403,
            f"this token is bound to workspace '{identity.workspace}' and cannot act for '{workspace}'",
            code="workspace_not_allowed",
            param="omen.workspace",
        )
    refused = other_books(request)
    if refused is not None:
        raise refused
    relayed = relays_for(request, identity)
    caller = Caller(
        request_id=request_id_of(request),
        user=identity.user,
        workspace=workspace or identity.workspace,
        client=clean_text(request.headers.get("User-Agent")),
        session=req.hints.session,
        asked=req.asked,
        instance=relayed_by(request.headers.get("X-Omen-Instance")) if relayed else None,
    )
    return req, caller, caller.request_id


def omen_headers_of(request_id: str, target: Target, plan: Plan, alias: str | None, asked: str | None = None) -> dict[str, str]:
    headers = {
        "x-omen-request-id": request_id,
        "x-omen-provider": header_text(target.provider),
        "x-omen-model": header_text(target.model),  # names come from servers' listings
        "x-omen-strategy": plan.strategy,
    }
    if plan.intent is not None:
        headers["x-omen-intent"] = plan.intent + (" (guessed)" if plan.intent_guessed else "")
    if alias is not None:
        headers["x-omen-alias"] = alias
    if asked is not None:
        headers["x-omen-asked-model"] = header_text(asked)
        headers["x-omen-price-cap"] = cap_header(plan.price_cap)
    if plan.skipped:  # candidates whose window could not hold the prompt (issue 24)
        headers["x-omen-skipped"] = header_text("; ".join(plan.skipped))
    return headers


def header_text(text: str) -> str:
    """``text`` as a header value: printable ASCII only (a model name comes from a server's
    listing, and a header must never carry a line break or bytes a client cannot decode)."""
    if text.isascii() and text.isprintable():  # what every name is: nothing to replace
        return text
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)
