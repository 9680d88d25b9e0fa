"""The bearer token `glyph serve --http` requires: created once, kept user-only, checked per request.

Loopback is shared by every account and process on the machine, so an HTTP Glyph without a
token hands the roots' files to anyone who can connect. The token is generated on first use
and stored in Glyph's data dir, mode 0600 in a 0700 directory; a token file that another
user owns, or that is a symlink, is refused rather than trusted. Requests are checked by the
MCP SDK's own bearer-auth middleware (``AuthSettings`` + a ``TokenVerifier``), which answers
401 with ``WWW-Authenticate: Bearer`` to a request without the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from .private import private_dir

TOKEN_FILE = "http-token"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (the only place Glyph's plain-HTTP endpoint may listen)?"""
    if host.lower().rstrip(".") in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TokenFileError(ValueError):
    """The token file exists but cannot be trusted (another owner, a symlink, not a file)."""


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def load_or_create(path: Path) -> tuple[str, bool]:
    """The token stored at ``path`` (created 0600 when absent), and whether it was just created.

    A token file that others could read is replaced by a new token (and said to be created):
    tightening it would keep a token someone else may already have copied."""
    private_dir(path.parent)  # every level it makes 0700, an existing one of ours tightened
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        token = _read(path)
        if token is not None:
            return token, False
        return _replace(path), True
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


def _replace(path: Path) -> str:
    """A new token written beside ``path`` (0600 from the start) and renamed over it."""
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def _read(path: Path) -> str | None:
    """The stored token; None if the file was readable by others (it must be replaced)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot open the token file ({exc.strerror or exc})") from exc
    with os.fdopen(fd, encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"{path}: the token file is not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise TokenFileError(f"{path}: the token file belongs to another user (uid {st.st_uid}); not trusted")
        if st.st_mode & 0o077:
            return None  # ours but readable by others: its token may be known, so it is not used
        token = f.read().strip()
    if len(token) < 16:
        raise TokenFileError(f"{path}: the token file holds no usable token (delete it to make a new one)")
    return token


class StaticTokenVerifier:
    """A ``mcp.server.auth.provider.TokenVerifier`` that accepts exactly one token (constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._expected):
            return AccessToken(token=token, client_id="glyph-http", scopes=[])
        return None


def auth_settings(host: str, port: int) -> AuthSettings:
    """The SDK's auth settings for a resource server that checks its own static token."""
    where = f"[{host}]" if ":" in host else host
    return AuthSettings(issuer_url=f"http://{where}:{port}", resource_server_url=None)  # type: ignore[arg-type]
