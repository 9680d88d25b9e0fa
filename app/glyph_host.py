"""Glyph inside the app: the gateway and its Streamable HTTP endpoint on a thread of their own.

Consent questions go to the app's ``QtPrompter``, which shows the dialog on the UI thread
and hands the answer back to this loop: no nested event loop, nothing blocks the router.
Glyph's downstream servers (Rune, the user's MCP servers) are child processes of the
app; stopping the host closes the gateway, which ends them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from glyph.config import GlyphConfig
from glyph.consent import Prompter

from .bridge import LoopThread

log = logging.getLogger(__name__)
DEFAULT_PORT = 8767


class GlyphHost:
    def __init__(self, config: GlyphConfig, prompter: Prompter, *, port: int = DEFAULT_PORT,
                 token: str | None = None, on_ready: Callable[[str | None], None] | None = None) -> None:
        self.config = config
        self.prompter = prompter
        self.port = port
        self.token = token
        self.on_ready = on_ready  # called on Glyph's thread: None when serving, else why not
        self.thread = LoopThread("glyph")
        self.gateway: Any = None
        self._server: Any = None
        self._run_future: concurrent.futures.Future[None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self.url = f"http://127.0.0.1:{port}/mcp"

    def start(self) -> None:
        """Start in the background; returns at once."""
        self.thread.start()
        self._run_future = self.thread.submit(self._run())

    async def _run(self) -> None:
        import uvicorn

        from glyph.gateway import Gateway
        from glyph.server import build_server
        from rune.server import BearerAuth

        self._task = asyncio.current_task()
        if not self.token:  # loopback is shared: an HTTP Glyph without a token serves anyone
            if self.on_ready is not None:
                self.on_ready("Glyph is not started: it has no HTTP token")
            return
        try:
            async with Gateway(self.config, self.prompter) as gateway:
                self.gateway = gateway
                app: Any = build_server(gateway).streamable_http_app(host="127.0.0.1")
                app = BearerAuth(app, self.token)
                server = self._server = uvicorn.Server(
                    uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
                serving = asyncio.ensure_future(server.serve())
                for _ in range(600):  # uvicorn has no "started" event; 30 s at most
                    if server.started or serving.done():
                        break
                    await asyncio.sleep(0.05)
                if self.on_ready is not None:
                    self.on_ready(None if server.started else f"Glyph could not listen on port {self.port}")
                await serving
        except asyncio.CancelledError:
            log.info("Glyph stopped while starting")
        except Exception as exc:
            log.exception("Glyph stopped with an error")
            if self.on_ready is not None:
                self.on_ready(f"Glyph could not start: {exc}")
        finally:
            self.gateway = None

    def stop(self, timeout: float = 15.0) -> None:
        def request_stop() -> None:  # on Glyph's loop
            server = self._server
            if server is not None and server.started:
                server.should_exit = True  # uvicorn finishes, then the gateway closes its children
            elif self._task is not None:
                self._task.cancel()  # still connecting downstreams: abandon the start

        if self.thread.running:
            self.thread.call_soon(request_stop)
        if self._run_future is not None:
            with contextlib.suppress(Exception):
                self._run_future.result(timeout)  # the gateway's exit ends its children
        self.thread.stop(timeout)
