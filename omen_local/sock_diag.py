"""Linux's listening TCP sockets and their owners, asked of the kernel over netlink (sock_diag).

local_trust.py asks every second who owns a local model server's port. /proc/net/tcp and
tcp6 answer too, but the kernel builds them by walking its whole connection hash table
(262,144 buckets on a 24 GiB machine): about 20 ms of CPU per read when idle, and more
under load (7.7% of a core in issue 22's profile). A sock_diag dump filtered to the LISTEN
state walks only the listening sockets: about 0.1 ms.

The Python standard library speaks AF_NETLINK but has no sock_diag helper, and the
libraries that do (pyroute2) are large; the request and reply are fixed C structs
(linux/inet_diag.h), packed here. Any failure (no netlink in a sandbox, a kernel without
inet_diag) raises OSError, and the caller falls back to /proc.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBBI48x")  # inet_diag_req_v2: family, protocol, ext, pad, states, sockid (unused)
_PORT = struct.Struct(">H")  # inet_diag_sockid.sport, network order
_UID = struct.Struct("=I")
_MSG_SPORT = 4  # offsets in inet_diag_msg: family, state, timer, retrans, then the 48-byte sockid
_MSG_SRC = 8
_MSG_UID = 4 + 48 + 12  # after the sockid: expires, rqueue, wqueue, then uid
_MSG_LEN = _MSG_UID + 8  # uid, inode


@dataclass(frozen=True, slots=True)
class Listener:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    uid: int


def listeners() -> list[Listener]:
    """Every listening TCP socket of this network namespace (IPv4 and IPv6)."""
    found: list[Listener] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
            sock.send(_HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                      + request)  # fmt: skip
            found += _replies(sock, seq, family)
    return found


def _replies(sock: socket.socket, seq: int, family: int) -> list[Listener]:
    out: list[Listener] = []
    size = 4 if family == socket.AF_INET else 16
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, got_seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size or offset + length > len(data):
                raise OSError("sock_diag: a malformed or truncated reply")
            body = offset + _HEADER.size
            offset += (length + 3) & ~3
            if got_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", data, body)
                raise OSError(-errno, "sock_diag refused the request")
            if length - _HEADER.size < _MSG_LEN:
                raise OSError("sock_diag: a short reply")
            raw = data[body + _MSG_SRC : body + _MSG_SRC + size]
            address = ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw)
            (port,) = _PORT.unpack_from(data, body + _MSG_SPORT)
            (uid,) = _UID.unpack_from(data, body + _MSG_UID)
            out.append(Listener(address, port, uid))
