"""Asking through the tray app: Glyph's side of the consent channel (protocol in docs/app.md).

A ``glyph serve`` that an editor started over stdio cannot show a dialog of its own, but
the tray app can. When the app runs it offers a local channel: a Unix socket in the
user's private runtime dir (mode 0600), announced by ``consent.json`` beside it (mode
0600: the address and a random secret Glyph must present). :class:`AppPrompter` asks
there, one question per connection, in newline-delimited JSON; when the app is not
running it uses the configured fallback (the app's dialog as a one-shot process, the
terminal, or deny). Once a question has reached the app, any failure is a denial.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from glyph import private
from glyph.consent import ConsentRequest, Decision, DefinitionChange, DenyPrompter, Prompter, Scope

PROTOCOL = 1
APP_DIR = "omen-local"
CHANNEL_FILE = "consent.json"
MAX_LINE = 1 << 20  # a question with large file contents still fits; anything bigger is refused
CONNECT_TIMEOUT_S = 2.0


def runtime_base() -> Path:
    """The user's private runtime dir for OMEN Local (shared with the app's instance socket):
    never one another user made first (glyph/private.py)."""
    return private.runtime_base(create=False)


def channel_file() -> Path:
    env = os.environ.get("OMEN_CONSENT_CHANNEL")
    return Path(env) if env else runtime_base() / CHANNEL_FILE


# ---------------------------------------------------------------- the wire format (pure)


def request_to_json(request: ConsentRequest) -> dict[str, Any]:
    data = asdict(request)
    data["paths"] = list(request.paths)
    return data


def request_from_json(data: Any) -> ConsentRequest:
    """A ConsentRequest from the wire; ValueError for anything malformed."""
    if not isinstance(data, dict):
        raise ValueError("request must be an object")
    text_fields = ("client", "server", "tool", "exposed", "reason", "description", "id")
    for name in text_fields:
        if name in data and not isinstance(data[name], str):
            raise ValueError(f"request.{name} must be a string")
    for name in ("client", "server", "tool", "exposed", "reason"):
        if name not in data:
            raise ValueError(f"request.{name} is missing")
    arguments = data.get("arguments", {})
    paths = data.get("paths", [])
    if not isinstance(arguments, dict) or not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("request.arguments must be an object and request.paths a list of strings")
    changed = data.get("changed")
    change = None
    if changed is not None:
        if not (isinstance(changed, dict) and isinstance(changed.get("old"), dict) and isinstance(changed.get("new"), dict)):
            raise ValueError("request.changed must have old and new objects")
        change = DefinitionChange(changed["old"], changed["new"])
    extra = {k: data[k] for k in ("description", "id") if k in data}
    return ConsentRequest(
        client=data["client"], server=data["server"], tool=data["tool"], exposed=data["exposed"],
        arguments=arguments, reason=data["reason"], paths=tuple(paths),
        read_only=data.get("read_only") is True, destructive=data.get("destructive") is True,
        changed=change, **extra,
    )


def decision_from_json(data: Any, request_id: str) -> Decision:
    """The app's answer; anything unexpected is a denial that says why."""
    if not isinstance(data, dict) or data.get("type") != "decision" or data.get("id") != request_id:
        return Decision(Scope.DENY, "fail-closed:app-bad-answer")
    try:
        scope = Scope(str(data.get("scope")))
    except ValueError:
        return Decision(Scope.DENY, "fail-closed:app-bad-answer")
    by = data.get("by")
    by = by[:100] if isinstance(by, str) and by else "user"
    return Decision(scope, f"app:{by}")


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def read_channel(path: Path) -> tuple[str, str] | None:
    """(address, secret) from the channel file, or None when the app does not offer one."""
    try:
        st = path.stat()
        if os.name != "nt" and (st.st_uid != os.getuid() or st.st_mode & 0o077):
            return None  # not ours, or readable by others: do not trust it
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != PROTOCOL:
        return None
    address, secret = data.get("address"), data.get("secret")
    if not isinstance(address, str) or not isinstance(secret, str) or not secret:
        return None
    return address, secret


async def _connect(address: str) -> anyio.abc.ByteStream:
    kind, _, where = address.partition(":")
    with anyio.fail_after(CONNECT_TIMEOUT_S):
        if kind == "unix":
            return await anyio.connect_unix(where)
        if kind == "tcp":
            host, _, port = where.rpartition(":")
            if host not in ("127.0.0.1", "::1", "[::1]"):
                raise OSError("the consent channel must be on loopback")
            return await anyio.connect_tcp(host.strip("[]"), int(port))
    raise OSError(f"unknown consent channel address {address!r}")


class _Lines:
    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buf = b""

    async def read(self) -> Any:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise ValueError("line too long")
            chunk = await self.stream.receive(65536)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


class AppUnavailable(Exception):
    """The app does not run or offers no channel: use the fallback."""


class AppPrompter:
    """Asks the tray app; falls back to ``fallback`` when the app is not there."""

    name = "app"

    def __init__(self, fallback: Prompter | None = None, channel: Path | None = None, client: str = "glyph") -> None:
        self.fallback: Prompter = fallback or DenyPrompter()
        self.channel = channel
        self.client = client
        self.name = f"app (else {self.fallback.name})"

    async def ask(self, request: ConsentRequest) -> Decision:
        try:
            stream, secret = await self._open()
        except AppUnavailable:
            return await self.fallback.ask(request)
        async with stream:
            lines = _Lines(stream)
            try:
                await stream.send(encode({"type": "hello", "version": PROTOCOL, "secret": secret,
                                          "client": f"{self.client} pid {os.getpid()}"}))
                welcome = await lines.read()
                if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                    return Decision(Scope.DENY, "fail-closed:app-refused")
                await stream.send(encode({"type": "ask", "id": request.id, "request": request_to_json(request)}))
                answer = await lines.read()
            except (OSError, ValueError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return Decision(Scope.DENY, "fail-closed:app-connection-lost")
            return decision_from_json(answer, request.id)

    async def _open(self) -> tuple[anyio.abc.ByteStream, str]:
        found = read_channel(self.channel or channel_file())
        if found is None:
            raise AppUnavailable
        address, secret = found
        try:
            return await _connect(address), secret
        except (OSError, TimeoutError) as exc:  # a stale file: the app is gone
            raise AppUnavailable from exc


class DialogPrompter:
    """The app's consent dialog as a one-shot process (``python -m app.consent_once``): a
    fallback for a stdio Glyph when the app is not running but a desktop is. Fails closed."""

    name = "dialog"

    def __init__(self, python: str | None = None, timeout_s: float = 120.0) -> None:
        self.python = python or sys.executable
        self.timeout_s = timeout_s

    async def ask(self, request: ConsentRequest) -> Decision:
        payload = json.dumps({"request": request_to_json(request), "timeout_s": self.timeout_s}).encode()
        try:
            result = await anyio.run_process([self.python, "-m", "app.consent_once"], input=payload, check=False)
        except OSError:
            return Decision(Scope.DENY, "fail-closed:no-dialog")
        if result.returncode != 0:
            return Decision(Scope.DENY, "fail-closed:no-dialog")
        try:
            data = json.loads(result.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return Decision(Scope.DENY, "fail-closed:bad-answer")
        data = {"type": "decision", "id": request.id, **data} if isinstance(data, dict) else data
        decision = decision_from_json(data, request.id)
        return Decision(decision.scope, decision.by.replace("app:", "dialog:", 1))
