"""Who may talk to OMEN: loopback Host names, no web pages, a valid bearer token.

DNS rebinding makes a hostile page's requests arrive with a foreign Host header; a
drive-by page's requests carry its Origin. Both are refused before anything else runs.
"""

from __future__ import annotations

import functools
import ipaddress

from ..errors import OmenError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def host_name(host_header: str) -> str:
    """The host part of a Host header, without port or IPv6 brackets, lowercased."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h


def is_loopback_host(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=512)
def _host_ok(host_header: str, allowed: tuple[str, ...]) -> tuple[bool, str]:
    name = host_name(host_header)
    return is_loopback_host(name) or name in allowed, name


def check_host(host_header: str | None, allowed: tuple[str, ...]) -> None:
    if not host_header:
        raise OmenError(403, "a Host header is required", code="forbidden_host")
    ok, name = _host_ok(host_header, allowed)
    if not ok:
        raise OmenError(
            403,
            f"Host '{name}' is not allowed: OMEN answers loopback names only (add it to server.allowed_hosts)",
            code="forbidden_host",
        )


def check_origin(origin: str | None, fetch_site: str | None, allowed: tuple[str, ...]) -> None:
    """Refuse browser requests from web pages unless their Origin is explicitly allowed."""
    if origin is not None and origin not in allowed:
        raise OmenError(
            403,
            f"requests from web pages (Origin '{origin}') are refused; add it to server.allowed_origins",
            code="forbidden_origin",
        )
    if origin is None and fetch_site in ("cross-site", "same-site"):
        raise OmenError(403, "cross-site browser requests are refused", code="forbidden_origin")


def bearer(authorization: str | None, api_key: str | None = None) -> str:
    """The token of an ``Authorization: Bearer`` header, else of an ``x-api-key`` header
    (what Anthropic's SDKs send), or a 401."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    raise OmenError(
        401,
        "missing bearer token: send 'Authorization: Bearer <token>' or 'x-api-key: <token>' (see `omen token`)",
        type="invalid_request_error",
        code="invalid_api_key",
    )
