"""The aiohttp application: one edge middleware, four routes.

The edge checks Host/Origin and the bearer token, and turns every failure into the
OpenAI error shape. Nothing here decides a route; the handlers call the Router.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aiohttp import web

from .. import jsonutil
from ..api.request import parse_chat_request
from ..errors import OmenError, invalid
from ..providers.base import UpstreamError, Usage
from ..routing.catalog import Target
from ..routing.router import Plan, RequestContext, Router
from ..routing.session import StreamSession
from ..tokens import Identity, TokenBook
from .security import bearer, check_host, check_origin
from .sse import DONE, ChunkEncoder

log = logging.getLogger(__name__)

class RouterSlot:
    """The router new requests start on. A host swaps it to reconfigure (``OmenService.reload``);
    a request keeps the router it started with to its end."""

    __slots__ = ("router",)

    def __init__(self, router: Router) -> None:
        self.router = router


ROUTER: web.AppKey[RouterSlot] = web.AppKey("router", RouterSlot)
TOKENS: web.AppKey[TokenBook] = web.AppKey("tokens", TokenBook)
STATUS: web.AppKey[Any] = web.AppKey("status", object)
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)
PUBLIC_PATHS = frozenset({"/health"})


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


def _from_http_exception(exc: web.HTTPException, max_body: int) -> OmenError:
    if exc.status == 413:
        return OmenError(
            413,
            f"the request body is larger than the limit of {max_body / 1048576:g} MB (server.max_body_mb)",
            code="request_too_large",
        )
    if exc.status == 404:
        return OmenError(404, "unknown URL; OMEN serves /v1/chat/completions, /v1/models, /v1/omen/status, /v1/usage, /health", code="unknown_url")
    if exc.status == 405:
        return OmenError(405, f"method not allowed: {exc.reason}", code="method_not_allowed")
    return OmenError(exc.status, exc.reason or "request failed", code="http_error")


def make_edge(tokens: TokenBook, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...], max_body: int) -> Any:
    @web.middleware
    async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
        headers = request.headers
        try:
            check_host(headers.get("Host"), allowed_hosts)
            check_origin(headers.get("Origin"), headers.get("Sec-Fetch-Site"), allowed_origins)
            if request.path not in PUBLIC_PATHS:
                ident = tokens.identify(bearer(headers.get("Authorization")))
                if ident is None:
                    raise OmenError(
                        401,
                        "Incorrect API key provided: use the token `omen token` prints",
                        type="invalid_request_error",
                        code="invalid_api_key",
                    )
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
            return error_response(err)
        except web.HTTPException as exc:
            return error_response(_from_http_exception(exc, max_body))
        except ConnectionResetError:
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return error_response(OmenError(500, "internal error in OMEN; see its log", code="internal_error"))

    return edge


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


async def _read_json(request: web.Request) -> Any:
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


def _headers(request_id: str, target: Target, plan: Plan) -> dict[str, str]:
    headers = {
        "x-omen-request-id": request_id,
        "x-omen-provider": target.provider,
        "x-omen-model": target.model,
        "x-omen-strategy": plan.strategy,
    }
    if plan.intent is not None:
        headers["x-omen-intent"] = plan.intent + (" (guessed)" if plan.intent_guessed else "")
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER].router
    request_id = _request_id()
    identity: Identity = request[IDENTITY]
    try:
        raw = await _read_json(request)
        req = parse_chat_request(raw, intents=tuple(router.config.intents), providers=tuple(router.config.providers))
        headers = request.headers
        ctx = RequestContext(
            request_id,
            identity,
            client=headers.get("User-Agent"),
            workspace=req.hints.workspace or headers.get("x-omen-workspace") or identity.workspace,
            session=req.hints.session or headers.get("x-omen-session"),
        )
        if not req.stream:
            plan, target, done = await router.complete(req, ctx)
            return web.Response(
                body=jsonutil.dumps(done.body),
                content_type="application/json",
                headers=_headers(request_id, target, plan),
            )
        plan, session = await router.stream(req, ctx)
    except OmenError as err:
        return error_response(err, request_id)
    return await _stream(request, session, request_id, req.include_usage)


async def _stream(
    request: web.Request, session: StreamSession, request_id: str, include_usage: bool
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **_headers(request_id, session.target, session.plan),
        }
    )
    enc = ChunkEncoder("chatcmpl-" + request_id[4:], session.target.model)
    outcome: str = "cancelled"
    error: UpstreamError | None = None
    held: list[bytes] = []  # encoded frames waiting for the rest of their upstream read
    try:
        await resp.prepare(request)
        async for chunk in session:
            if chunk.omen is not None and "swap" in chunk.omen:
                enc.model = session.target.model
            if chunk.delta or chunk.finish_reason is not None or chunk.omen is not None:
                held.append(enc.chunk(chunk))
            if not chunk.more and held:  # frames from one upstream read go out in one write
                await resp.write(b"".join(held))
                held.clear()
        if include_usage:
            usage = session.usage or Usage(
                prompt_tokens=session.prompt_estimate,
                completion_tokens=(session.output_chars + 3) // 4,
            )
            held.append(enc.usage(usage))
        held.append(DONE)
        await resp.write(b"".join(held))
        held.clear()
        outcome = "ok"
    except UpstreamError as err:
        outcome, error = "error", err
        failure = OmenError(
            502,
            f"{err.message}; the answer above is incomplete",
            code="upstream_stream_error",
        )
        try:
            await resp.write(b"".join(held) + enc.error(failure))
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        pass  # the client went away; finish() below closes the upstream
    finally:
        await session.finish(outcome, error)
    return resp


async def list_models(request: web.Request) -> web.Response:
    router = request.app[ROUTER].router
    data = [{"id": "auto", "object": "model", "created": 0, "owned_by": "omen"}]
    data += [
        {"id": str(t), "object": "model", "created": 0, "owned_by": t.provider}
        for t in router.catalog.listing()
    ]
    return web.Response(body=jsonutil.dumps({"object": "list", "data": data}), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    router = request.app[ROUTER].router
    name = request.match_info["model"]
    if name != "auto":
        target = router.catalog.resolve(name)[0]
        name = str(target)
    owner = "omen" if name == "auto" else name.split("/", 1)[0]
    return web.Response(
        body=jsonutil.dumps({"id": name, "object": "model", "created": 0, "owned_by": owner}),
        content_type="application/json",
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def status(request: web.Request) -> web.Response:
    return web.Response(body=jsonutil.dumps(request.app[STATUS]()), content_type="application/json")


def make_app(router: Router, tokens: TokenBook, status_fn: Any) -> web.Application:
    server = router.config.server
    app = web.Application(
        middlewares=[make_edge(tokens, server.allowed_hosts, server.allowed_origins, server.max_body_bytes)],
        client_max_size=server.max_body_bytes,
    )
    app[ROUTER] = RouterSlot(router)
    app[TOKENS] = tokens
    app[STATUS] = status_fn
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/v1/omen/status", status)
    app.router.add_get("/health", health)
    return app


