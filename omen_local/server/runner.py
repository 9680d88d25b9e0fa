"""The aiohttp runner, with errors from below the application in the OpenAI shape too.

A request aiohttp's parser refuses (200+ headers, an 8 KB header line, a bad method)
never reaches the middleware; aiohttp answers it in plain text. Clients expect
``{"error": {...}}`` from every answer of this server, so the low-level handler writes
that shape instead, and logs such client mistakes quietly.

aiohttp has no public hook for that answer (docs/architecture.md, "Dependencies' APIs"):
the connection's ``RequestHandler.handle_error`` writes it, and the runner's
``_make_server`` builds the ``web.Server`` that makes those handlers. Both are
undocumented, so aiohttp is pinned to the tested minor version and
tests/test_dependency_apis.py names what moved if an upgrade changes them.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .. import jsonutil
from ..errors import OmenError

log = logging.getLogger(__name__)


class _Handler(RequestHandler):
    __slots__ = ()  # the same layout as RequestHandler, so an instance can take this class

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # some of a response went out: nothing sane to add
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            log.error("error handling a request", exc_info=exc)
            err = OmenError(status, "internal error in OMEN; see its log", code="internal_error")
        else:
            log.debug("refused a malformed request: %s", message or exc)
            detail = (message or (str(exc) if exc else "") or "malformed request").splitlines()[0][:300]
            err = OmenError(status, f"malformed HTTP request: {detail}", code="bad_http_request")
        resp = web.Response(status=status, body=jsonutil.dumps(err.body()), content_type="application/json")
        resp.force_close()
        return resp


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        # aiohttp builds the handler (its own arguments, whatever they become); only its
        # class changes, which needs nothing but the slot layout _Handler shares.
        handler = super().__call__()
        handler.__class__ = _Handler
        return handler


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser errors in the OpenAI error shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        return server
