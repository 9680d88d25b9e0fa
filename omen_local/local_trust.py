"""Whose is a port on this machine? Loopback is shared by every account and process.

A server that answers on 127.0.0.1 is not thereby the user's: another account can bind
Ollama's port (or OMEN's, after a crash) and read every prompt sent there. A local
server is trusted only when its listening socket belongs to this user (or root, who can
read the user's files anyway), or to the account the user named in the config
(``trust_owner``: Linux packages run Ollama as the ``ollama`` system user).

Linux: the listening sockets and their owners' uids come from the kernel's sock_diag
netlink interface (sock_diag.py; about 0.1 ms), else from /proc/net/tcp and tcp6 (about
20 ms: the kernel walks its whole connection table), both of this process's network
namespace and open to every user. Elsewhere: psutil, if installed,
lists this user's own processes' listening sockets; a port no process of ours holds is
"not verified". Nothing here sends a byte to the port.

This module is imported by the client kit: it must stay free of server imports.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import sock_diag

ANY_OWNER = "*"
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True, slots=True)
class Listeners:
    """The owners of the sockets listening on a port (loopback or wildcard addresses).

    ``uids`` empty: nobody listens there (a connection would be refused). ``known`` False:
    this OS gave no answer (then ``mine`` says whether a process of ours holds it)."""

    uids: frozenset[int]
    known: bool = True
    mine: bool = False


def _my_uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def _hex_addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # tcp6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return ipaddress.IPv6Address(words)


def _reachable_from_loopback(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A listener a loopback connection can reach: a loopback address or a wildcard."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_unspecified


def parse_proc_net(text: str, port: int) -> set[int]:
    """The uids of LISTEN sockets on ``port`` at a loopback or wildcard address, from the
    text of /proc/net/tcp or /proc/net/tcp6.

    A search for the port followed by a LISTEN state finds the few lines worth splitting:
    under load the tables hold thousands of connections, and splitting every line took
    milliseconds of the serving loop each second."""
    uids: set[int] = set()
    for match in re.finditer(rf":{port:04X} [0-9A-Fa-f]+:[0-9A-Fa-f]+ {LISTEN} ", text):
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        fields = text[start : len(text) if end == -1 else end].split()
        if len(fields) < 8 or fields[3] != LISTEN:
            continue
        host, _, port_hex = fields[1].rpartition(":")
        try:
            if int(port_hex, 16) != port or not _reachable_from_loopback(_hex_addr(host)):
                continue
            uids.add(int(fields[7]))
        except ValueError:
            continue
    return uids


def _linux(port: int) -> Listeners | None:
    try:
        found = sock_diag.listeners()
    except (OSError, ValueError, struct.error):  # no netlink here (a sandbox, an old kernel), or an
        return _proc(port)  # answer it could not read: the /proc tables say the same
    return Listeners(frozenset(s.uid for s in found if s.port == port and _reachable_from_loopback(s.address)))


def _proc(port: int) -> Listeners | None:
    uids: set[int] = set()
    read_any = False
    for table in PROC_TABLES:
        try:
            text = table.read_text()
        except OSError:
            continue
        read_any = True
        uids |= parse_proc_net(text, port)
    return Listeners(frozenset(uids)) if read_any else None


def _psutil(port: int) -> Listeners:  # pragma: no cover  (macOS, Windows)
    try:
        import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return Listeners(frozenset(), known=False)
    me = os.getpid()
    try:
        my_user = psutil.Process(me).username()
    except Exception:
        return Listeners(frozenset(), known=False)
    for proc in psutil.process_iter(["username"]):
        try:
            if proc.info.get("username") != my_user:
                continue
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return Listeners(frozenset(), known=False, mine=True)
        except Exception:  # gone, or not ours to inspect
            continue
    return Listeners(frozenset(), known=False)


def listeners(port: int) -> Listeners:
    """Who listens on ``port`` on this machine's loopback."""
    if sys.platform.startswith("linux"):
        found = _linux(port)
        if found is not None:
            return found
    return _psutil(port)


def _uid_of(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        import pwd
    except ImportError:  # pragma: no cover  (Windows)
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name}, uid {uid}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names when it is an IP literal in any spelling a connect accepts:
    ``[::ffff:127.0.0.1]`` is unmapped, ``127.1`` and ``2130706433`` (inet_aton's short forms)
    are expanded; None for a name."""
    host = host.strip("[]").split("%", 1)[0].lower().rstrip(".")
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        if not host or not all(c in "0123456789abcdefx." for c in host):
            return None
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def is_loopback_host(host: str) -> bool:
    """Does a connection to ``host`` stay on this machine? Loopback in any spelling, a
    wildcard address (connecting to 0.0.0.0 or :: reaches this machine) and ``localhost``
    (with or without the trailing dot of a fully qualified name)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    addr = host_address(host)
    return addr is not None and (addr.is_loopback or addr.is_unspecified)


def url_port(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return (parts.hostname or ""), port


def distrust(url: str, trust_owner: str | None = None) -> str | None:
    """Why a server at ``url`` on this machine must not get requests, or None.

    None for a non-loopback URL (not this module's question), a port nobody holds, a
    socket of this user or root, and one of the account the user named (``trust_owner``,
    a user name, uid or ``*`` for anyone)."""
    where = url_port(url)
    if where is None or not is_loopback_host(where[0]):
        return None
    host, port = where
    if trust_owner == ANY_OWNER:
        return None
    found = listeners(port)
    if not found.known:
        if found.mine:
            return None
        return (f"{host}:{port} is not verified as yours (this OS does not say who listens there; "
                "install psutil, or set trust_owner in the provider's config)")
    me = _my_uid()
    allowed = {0} if me is None else {0, me}
    if trust_owner:
        uid = _uid_of(trust_owner)
        if uid is not None:
            allowed.add(uid)
    strangers = sorted(found.uids - allowed)
    if not strangers:
        return None
    who = ", ".join(_user_name(u) for u in strangers)
    return (f"{host}:{port} belongs to another user ({who}); if that server is yours to use, "
            f"set trust_owner = \"{_bare_name(strangers[0])}\" in its provider's config")


def _bare_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def own_listener(url: str) -> str | None:
    """Why the server at loopback ``url`` cannot be shown to be this user's own, or None
    when its socket is ours (root does not count here: a token goes only to our own)."""
    where = url_port(url)
    if where is None or not is_loopback_host(where[0]):
        return f"{url} is not on this machine's loopback"
    host, port = where
    found = listeners(port)
    if not found.known:
        return None if found.mine else f"{host}:{port} is not verified as yours (install psutil)"
    if not found.uids:
        return f"nothing listens on {host}:{port}"
    me = _my_uid()
    strangers = sorted(u for u in found.uids if u != me)
    if strangers:
        return f"{host}:{port} belongs to another user ({', '.join(_user_name(u) for u in strangers)})"
    return None

