"""The aiohttp application: one edge middleware, the routes.

The edge checks Host/Origin and the bearer token, and turns every failure into the
OpenAI error shape. Handlers turn HTTP into a routed request (body, hints, caller) and
the router's answer back into HTTP; nothing here decides a route.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import jsonutil
from ..api.hints import NO_HINTS, alias_hints, combine, header_hints
from ..api.model_map import cap_header, mapped_name
from ..api.request import ChatRequest, parse_chat_request
from ..caller import Caller
from ..config import Config, ConfigError, ServerConfig
from ..errors import OmenError, invalid
from ..observe import Outcome
from ..providers.errors import UpstreamError
from ..requestlog import RequestLog, RequestNote, door_of, now_iso
from ..routing.catalog import Target
from ..routing.planner import Plan
from ..routing.router import Router
from ..routing.session import StreamSession
from ..tokens import Identity, TokenBook, reserved_user
from .exposure import is_loopback_peer, typed_hosts
from .security import bearer, check_host, check_origin, host_name
from .sse import DONE, ChunkEncoder

log = logging.getLogger(__name__)

CLIENT_MAX_CHARS = 256  # a User-Agent longer than this is cut (it is stored with every usage event)


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
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
NOTE: web.RequestKey[RequestNote] = web.RequestKey("request_note", RequestNote)
PUBLIC_PATHS = frozenset({"/health", "/v1/omen/hello"})
MAX_NONCE = 128
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


def note_of(request: web.Request) -> RequestNote:
    """The request log's note for this request (a throwaway one when the log is off)."""
    note = request.get(NOTE)
    if note is None:
        note = RequestNote()
        request[NOTE] = note
    return note


def make_request_logger(book: RequestLog) -> Any:
    """One log line per request, written when the answer (a whole stream included) is done."""

    @web.middleware
    async def log_request(request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.monotonic()
        note = note_of(request)
        status: int | str = 499  # the client went away before an answer
        headers: Any = {}
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
                ident = tokens.identify(bearer(headers.get("Authorization"), headers.get("x-api-key")))
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
    caller = Caller(
        request_id=request_id_of(request),
        user=identity.user,
        workspace=workspace or identity.workspace,
        client=clean_text(request.headers.get("User-Agent")),
        session=req.hints.session,
        asked=req.asked,
    )
    return req, caller, caller.request_id


def _headers(request_id: str, target: Target, plan: Plan, alias: str | None, asked: str | None = None) -> dict[str, str]:
    headers = {
        "x-omen-request-id": request_id,
        "x-omen-provider": target.provider,
        "x-omen-model": target.model,
        "x-omen-strategy": plan.strategy,
    }
    if plan.intent is not None:
        headers["x-omen-intent"] = plan.intent + (" (guessed)" if plan.intent_guessed else "")
    if alias is not None:
        headers["x-omen-alias"] = alias
    if asked is not None:
        headers["x-omen-asked-model"] = asked
        headers["x-omen-price-cap"] = cap_header(plan.price_cap)
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER].get()
    request_id = request_id_of(request)
    try:
        req, caller, _ = routed_request(await read_json(request), request, router.config)
        if not req.stream:
            routed = await router.complete(req, caller)
            headers = _headers(request_id, routed.target, routed.plan, req.alias, req.asked)
            headers["x-omen-cost-usd"] = f"{routed.cost_usd:.8f}"
            return web.Response(body=jsonutil.dumps(routed.completion.body), content_type="application/json", headers=headers)
        session = await router.stream(req, caller)
    except OmenError as err:
        return error_response(err, request_id)
    return await _stream(request, session, request_id, req)


async def _stream(request: web.Request, session: StreamSession, request_id: str, req: ChatRequest) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **_headers(request_id, session.target, session.plan, req.alias, req.asked),
        }
    )
    enc = ChunkEncoder("chatcmpl-" + request_id[4:], session.target.model)
    outcome = Outcome.CANCELLED
    error: UpstreamError | None = None
    held: list[bytes] = []  # frames of the read that ended the stream, written with its end
    try:
        await resp.prepare(request)
        async for batch in session.batches():
            if batch and batch[0].omen is not None and "swap" in batch[0].omen:  # a swap comes alone
                enc.model = session.target.model
            frames = enc.frames(batch)
            if batch.last:
                held.append(frames)
            elif frames:  # the frames of one upstream read go out in one write
                await resp.write(frames)
        if req.include_usage:
            usage, estimated = session.usage_or_estimate()
            cost = session.call.spent_usd + usage.cost(session.attempt.price)
            held.append(enc.usage(usage, {"cost_usd": round(cost, 8), "usage_estimated": estimated}))
        held.append(DONE)
        await resp.write_eof(b"".join(held))
        held.clear()
        outcome = Outcome.OK
    except UpstreamError as err:
        outcome, error = Outcome.ERROR, err
        failure = OmenError(502, f"{err.message}; the answer above is incomplete", code="upstream_stream_error")
        try:
            await resp.write(b"".join(held) + enc.error(failure))
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        pass  # the client went away; finish() below closes the upstream
    finally:
        await session.finish(outcome, error)
    return resp


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
    return web.Response(body=jsonutil.dumps(request.app[STATUS]()), content_type="application/json")


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
    hello_fn: Any = None, server_fn: Callable[[], ServerConfig] | None = None,
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
    app.router.add_post("/v1/chat/completions", chat_completions)
    if reload_fn is not None:
        app.router.add_post("/v1/omen/reload", reload)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/v1/omen/status", status)
    if hello_fn is not None:
        app.router.add_get("/v1/omen/hello", hello)
    app.router.add_get("/health", health)
    from .messages_door import add_messages_routes  # the doors import this module
    from .responses_door import add_responses_routes
    from .text_doors import add_text_routes

    add_messages_routes(app)
    add_responses_routes(app)
    add_text_routes(app)
    return app
