"""The aiohttp application: one edge middleware, the routes.

The edge checks Host/Origin and the bearer token, and turns every failure into the
OpenAI error shape. Handlers turn HTTP into a routed request (body, hints, caller) and
the router's answer back into HTTP; nothing here decides a route. This module assembles:
it imports the doors and the shared plumbing (:mod:`.plumbing`); nothing in the server
imports it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import jsonutil
from ..config import ConfigError, ServerConfig
from ..errors import OmenError
from ..providers.base import Batch, Usage
from ..requestlog import RequestLog, door_of, now_iso
from ..routing.router import Router
from ..routing.session import StreamSession
from ..tokens import TokenBook, reserved_user
from .door_kit import Turn, answer
from .exposure import is_loopback_peer, typed_hosts
from .messages_door import add_messages_routes
from .plumbing import (
    BOOKS,
    CLIENT_MAX_CHARS,
    HELLO,
    IDENTITY,
    RELAYS,
    RELOAD,
    REQUEST_ID,
    ROUTER,
    STATUS,
    TOKENS,
    RouterRef,
    note_of,
    read_json,
    render_error,
    routed_request,
)
from .responses_door import add_responses_routes
from .security import bearer, check_host, check_origin, host_name
from .sse import DONE, ChunkEncoder
from .text_doors import add_text_routes

log = logging.getLogger(__name__)


PUBLIC_PATHS = frozenset({"/health", "/v1/omen/hello"})
MAX_NONCE = 128


def _from_http_exception(exc: web.HTTPException, max_body: int) -> OmenError:
    if exc.status == 413:
        return OmenError(
            413,
            f"the request body is larger than the limit of {max_body / 1048576:g} MB (server.max_body_mb)",
            code="request_too_large",
        )
    if exc.status == 404:
        return OmenError(
            404, "unknown URL; OMEN serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, /v1/responses, /v1/models, /v1/omen/status, /v1/usage, /health", code="unknown_url"
        )
    if exc.status == 405:
        return OmenError(405, f"method not allowed: {exc.reason}", code="method_not_allowed")
    return OmenError(exc.status, exc.reason or "request failed", code="http_error")


def make_request_logger(book: RequestLog) -> Any:
    """One log line per request, written when the answer (a whole stream included) is done."""

    @web.middleware
    async def log_request(request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.monotonic()
        note = note_of(request)
        status: int | str = 499  # the client went away before an answer
        headers: Any = {}
        book.begin()
        try:
            response: web.StreamResponse = await handler(request)
            status, headers = response.status, response.headers
            return response
        except web.HTTPException as exc:
            status, headers = exc.status, exc.headers
            raise
        finally:
            book.write({
                "time": now_iso(), "door": door_of(request.path), "method": request.method, "path": request.path,
                "status": status, "client": request.headers.get("User-Agent", "")[:CLIENT_MAX_CHARS],
                "asked": note.asked, "alias": headers.get("x-omen-alias") or note.alias,
                "provider": headers.get("x-omen-provider"), "model": headers.get("x-omen-model"),
                "strategy": headers.get("x-omen-strategy"), "latency_ms": round((time.monotonic() - start) * 1000),
                "request_id": headers.get("x-omen-request-id") or request.get(REQUEST_ID),
                "ignored": ",".join(note.ignored), "translated": ",".join(note.translated),
            })  # fmt: skip

    return log_request


def _check_remote(request: web.Request, typed: tuple[str, ...]) -> None:
    """A request from another machine (OMEN bound beyond loopback, exposure.py): over TLS,
    and naming a Host the user typed, never a loopback name."""
    if not request.secure:
        raise OmenError(403, "plain HTTP from another machine is refused: use https", code="tls_required")
    name = host_name(request.headers.get("Host") or "")
    if name not in typed:
        raise OmenError(403, f"Host '{name}' is not allowed from another machine: use one of the names in "
                             "server.host or server.allowed_hosts", code="forbidden_host")


def make_edge(tokens: TokenBook, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...], max_body: int,
              server_fn: Callable[[], ServerConfig] | None = None) -> Any:
    seen: list[Any] = [None, ()]  # the server config last seen, and its typed Host names

    @web.middleware
    async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
        headers = request.headers
        try:
            typed: tuple[str, ...] = ()
            if server_fn is not None:
                server = server_fn()
                if server is not seen[0]:  # a reload may bind elsewhere: its typed names from then on
                    seen[:] = [server, typed_hosts(server)]
                typed = seen[1]
            check_host(headers.get("Host"), allowed_hosts + typed if typed else allowed_hosts)
            check_origin(headers.get("Origin"), headers.get("Sec-Fetch-Site"), allowed_origins)
            transport = request.transport
            remote = transport is not None and not is_loopback_peer(transport.get_extra_info("peername"))
            if remote:
                _check_remote(request, typed)
            if request.path not in PUBLIC_PATHS:
                presented = bearer(headers.get("Authorization"), headers.get("x-api-key"))
                ident = tokens.identify(presented)
                if ident is None and tokens.team is not None:  # a team token just made elsewhere
                    ident = await tokens.team_lookup(presented)
                if ident is None:
                    raise OmenError(
                        401,
                        "Incorrect API key provided: use the token `omen token` prints",
                        type="invalid_request_error",
                        code="invalid_api_key",
                    )
                if remote and (tokens.is_owner(ident) or reserved_user(ident.user)):
                    raise OmenError(403, "from another machine, only a client token is accepted (never the owner's "
                                         "or the endpoint file's): `omen token create --user NAME`", code="client_token_required")
                request[IDENTITY] = ident
            length = request.content_length
            if length is not None and length > max_body:
                raise OmenError(
                    413,
                    f"the request body is larger than the limit of {max_body / 1048576:g} MB (server.max_body_mb)",
                    code="request_too_large",
                )
            response: web.StreamResponse = await handler(request)
            return response
        except OmenError as err:
            return render_error(request, err)
        except web.HTTPException as exc:
            return render_error(request, _from_http_exception(exc, max_body))
        except ConnectionResetError:
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return render_error(request, OmenError(500, "internal error in OMEN; see its log", code="internal_error"))

    return edge


async def _chat_turn(request: web.Request, router: Router, request_id: str) -> Turn:
    req, caller, _ = routed_request(await read_json(request), request, router.config)
    return Turn(req, caller, whole=lambda routed: routed.completion.body,
                encoder=lambda session: ChatFrames(session, request_id, req.include_usage))  # fmt: skip


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await answer(request, _chat_turn)


class ChatFrames:
    """The chat door's stream format for :func:`door_kit.stream_answer`: OpenAI chunks, a
    model swap renamed in the frames that follow it, the include_usage chunk (with what it
    cost and whether the counts are estimates) and ``[DONE]``."""

    def __init__(self, session: StreamSession, request_id: str, include_usage: bool) -> None:
        self.session = session
        self.include_usage = include_usage
        self.enc = ChunkEncoder("chatcmpl-" + request_id[4:], session.target.model)

    def start(self) -> bytes:
        return b""

    def frames(self, batch: Batch) -> bytes:
        if batch and batch[0].omen is not None and "swap" in batch[0].omen:  # a swap comes alone
            self.enc.model = self.session.target.model
        return self.enc.frames(batch)

    def finish(self, usage: Usage) -> bytes:
        if not self.include_usage:
            return DONE
        session = self.session
        _, estimated = session.usage_or_estimate()
        cost = session.call.spent_usd + usage.cost(session.attempt.price)
        return self.enc.usage(usage, {"cost_usd": round(cost, 8), "usage_estimated": estimated}) + DONE

    def error(self, err: OmenError) -> bytes:
        return self.enc.error(err)


def _model(id_: str, owner: str, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id_, "object": "model", "created": 0, "owned_by": owner}
    if description:
        out["description"] = description
    return out


async def list_models(request: web.Request) -> web.Response:
    router = request.app[ROUTER].get()
    config = router.config
    data = [_model("auto", "omen", f"OMEN picks (intent '{config.defaults.intent}' unless one is guessed or hinted)")]
    data += [_model(name, "omen", alias.description) for name, alias in config.aliases.items() if name != "auto"]
    data += [_model(str(t), t.provider) for t in router.catalog.listing()]
    return web.Response(body=jsonutil.dumps({"object": "list", "data": data}), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    router = request.app[ROUTER].get()
    name = request.match_info["model"]
    alias = router.config.aliases.get(name)
    if name == "auto" or alias is not None:
        body = _model(name, "omen", alias.description if alias else None)
    else:
        target = router.catalog.resolve(name)[0]
        body = _model(str(target), target.provider)
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def status(request: web.Request) -> web.Response:
    body = request.app[STATUS]()
    if not request.app[TOKENS].reads_everyone(request[IDENTITY]):
        # Redis away: the allowances name every user's and workspace's spend; a client token
        # reads its own usage only (/v1/usage), so not them either.
        quotas = body.get("metering", {}).get("team", {}).get("quotas")
        if isinstance(quotas, dict):
            quotas.pop("allowances", None)
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")


async def reload(request: web.Request) -> web.Response:
    """Re-read the config file (owner only): what ``omen provider add`` calls so the change applies at once."""
    if not request.app[TOKENS].is_owner(request[IDENTITY]):
        raise OmenError(403, "only the owner's token may reload OMEN's configuration", code="owner_only")
    try:
        config = await request.app[RELOAD]()
    except ConfigError as exc:
        raise OmenError(400, f"the config file cannot be used: {exc}", code="config_error") from None
    body = {"reloaded": True, "source": str(config.source) if config.source else None, "providers": sorted(config.providers)}
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")


async def hello(request: web.Request) -> web.Response:
    """Prove this is the OMEN of the endpoint file before a client sends it a token
    (endpoint.verify): the nonce's HMAC with the file's secret. Public, and tells nothing."""
    nonce = request.query.get("nonce", "")
    if not 16 <= len(nonce) <= MAX_NONCE or not nonce.isascii() or not nonce.isalnum():
        raise OmenError(400, f"nonce must be 16 to {MAX_NONCE} letters or digits", code="invalid_nonce")
    body = {"object": "omen.hello", "proof": request.app[HELLO](nonce)}
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")


def make_app(
    router: RouterRef, server: ServerConfig, tokens: TokenBook, status_fn: Any, reload_fn: Any = None,
    hello_fn: Any = None, server_fn: Callable[[], ServerConfig] | None = None, relays: bool = False,
    books: Callable[[], str | None] | None = None,
) -> web.Application:
    edge = make_edge(tokens, server.allowed_hosts, server.allowed_origins, server.max_body_bytes,
                     server_fn or (lambda: server))
    book = RequestLog() if server.request_log else None
    app = web.Application(
        middlewares=[make_request_logger(book), edge] if book is not None else [edge],
        client_max_size=server.max_body_bytes,
    )
    if book is not None:

        async def open_log(_: web.Application) -> None:
            book.start()

        async def close_log(_: web.Application) -> None:
            book.stop()

        app.on_startup.append(open_log)
        app.on_cleanup.append(close_log)
    app[ROUTER] = router
    app[TOKENS] = tokens
    app[STATUS] = status_fn
    app[RELOAD] = reload_fn
    app[HELLO] = hello_fn
    app[RELAYS] = relays
    if books is not None:
        app[BOOKS] = books
    app.router.add_post("/v1/chat/completions", chat_completions)
    if reload_fn is not None:
        app.router.add_post("/v1/omen/reload", reload)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/v1/omen/status", status)
    if hello_fn is not None:
        app.router.add_get("/v1/omen/hello", hello)
    app.router.add_get("/health", health)
    add_messages_routes(app)
    add_responses_routes(app)
    add_text_routes(app)
    return app
