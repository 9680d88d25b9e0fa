"""The app's side of the consent channel: external Glyphs ask, the native dialog answers.

Runs on its own asyncio loop thread (never the UI's, never the router's). Listens on a
Unix socket in the user's private runtime dir (0600; a loopback TCP port where Unix
sockets are not available), writes ``consent.json`` (0600) with the address and a fresh
random secret, checks the peer's uid where the OS tells it, and asks the prompter
(``app.consent_dialog.QtPrompter``: a dialog on the UI thread). A client that hangs up
before the answer closes its dialog as a denial. Protocol: docs/app.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from glyph.app_prompter import CHANNEL_FILE, MAX_LINE, PROTOCOL, encode, request_from_json
from glyph.consent import Decision, Prompter, ask_fail_closed

from .bridge import LoopThread
from .paths import runtime_dir

log = logging.getLogger(__name__)
SOCKET = "consent.sock"
HELLO_TIMEOUT_S = 5.0


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != getattr(socket, "AF_UNIX", None) or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ConsentServer:
    def __init__(self, prompter: Prompter, *, directory: Path | None = None, timeout_s: float = 120.0) -> None:
        self.prompter = prompter
        self.directory = directory
        self.timeout_s = timeout_s
        self.thread = LoopThread("consent-channel")
        self.secret = secrets.token_hex(32)
        self.address = ""
        self.channel_file: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self.answered = 0

    def start(self) -> Path:
        """Listen and announce the channel; returns the channel file's path."""
        self.thread.start()
        return self.thread.submit(self._start()).result(10)

    async def _start(self) -> Path:
        folder = self.directory or runtime_dir()
        if hasattr(asyncio, "start_unix_server") and sys.platform != "win32":
            path = folder / SOCKET
            path.unlink(missing_ok=True)
            old = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(self._handle, path=str(path), limit=MAX_LINE + 1)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            self.address = f"unix:{path}"
        else:  # pragma: no cover - Windows
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=MAX_LINE + 1)
            port = self._server.sockets[0].getsockname()[1]
            self.address = f"tcp:127.0.0.1:{port}"
        channel = folder / CHANNEL_FILE
        tmp = channel.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": PROTOCOL, "address": self.address, "secret": self.secret, "pid": os.getpid()}, f)
        os.replace(tmp, channel)
        self.channel_file = channel
        log.info("consent channel at %s", self.address)
        return channel

    def stop(self) -> None:
        if self.thread.running:
            with contextlib.suppress(Exception):
                self.thread.submit(self._stop()).result(5)
            self.thread.stop()

    async def _stop(self) -> None:
        if self.channel_file is not None:
            self.channel_file.unlink(missing_ok=True)
        if self._server is not None:
            self._server.close()
            if self.address.startswith("unix:"):
                Path(self.address[5:]).unlink(missing_ok=True)  # noqa: ASYNC240 - a local unlink at shutdown

    # ---------------------------------------------------------------- one connection, one question

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid is not None and hasattr(os, "getuid") and uid != os.getuid():
                log.warning("consent channel: refused a connection from uid %s", uid)
                return
            try:
                hello = await asyncio.wait_for(self._read(reader), HELLO_TIMEOUT_S)
            except (TimeoutError, ValueError):
                return
            if not (isinstance(hello, dict) and hello.get("type") == "hello"
                    and isinstance(hello.get("secret"), str)
                    and hmac.compare_digest(hello["secret"].encode(), self.secret.encode())):
                writer.write(encode({"type": "error", "message": "wrong secret: read consent.json again"}))
                await writer.drain()
                log.warning("consent channel: a client presented a wrong secret")
                return
            if hello.get("version") != PROTOCOL:
                writer.write(encode({"type": "error", "message": f"protocol version {PROTOCOL} only"}))
                await writer.drain()
                return
            writer.write(encode({"type": "welcome", "version": PROTOCOL}))
            await writer.drain()
            ask = await self._read(reader)
            if not isinstance(ask, dict) or ask.get("type") != "ask" or not isinstance(ask.get("id"), str):
                writer.write(encode({"type": "error", "message": "expected an ask"}))
                return
            try:
                request = request_from_json(ask.get("request"))
            except ValueError as exc:
                writer.write(encode({"type": "error", "message": str(exc)}))
                return
            client = str(hello.get("client") or "glyph")[:80]
            log.info("consent asked over the channel by %s: %s", client, request.exposed)
            decision = await self._ask_until_hangup(request, reader)
            if decision is None:
                return  # the client left; the dialog was closed as a denial
            self.answered += 1
            writer.write(encode({"type": "decision", "id": ask["id"], "scope": decision.scope.value,
                                 "by": decision.by}))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _ask_until_hangup(self, request: Any, reader: asyncio.StreamReader) -> Decision | None:
        asking = asyncio.ensure_future(ask_fail_closed(self.prompter, request, self.timeout_s))
        hangup = asyncio.ensure_future(reader.read(1))  # b"" at EOF: Glyph gave up
        try:
            done, _ = await asyncio.wait({asking, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if asking in done:
                return asking.result()
            return None
        finally:
            for task in (asking, hangup):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Any:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ValueError("line too long") from None
        except asyncio.IncompleteReadError as exc:
            raise ValueError("connection closed") from exc
        return json.loads(line)

