"""Listening beyond loopback: TLS required, per-client tokens only, typed Host names only.

On loopback the Host check stops DNS rebinding and the token never leaves the machine.
Bound to a LAN address, neither holds: a LAN client can send ``Host: localhost``, and a
bearer token over plain HTTP is readable by anyone on the network. So beyond loopback:

- OMEN serves TLS only: the certificate the user gives (``[server] tls_cert``/``tls_key``),
  or a self-signed one made once in the data dir (key 0600), whose SHA-256 fingerprint
  ``omen serve`` prints and ``/v1/omen/status`` shows, for clients to pin;
- a request from another machine must carry a client token (never the owner's, nor the
  endpoint file's ``local`` one) and name in ``Host`` one of the names the user typed (the
  bound address, ``server.allowed_hosts``), never a loopback name.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from ..config import ServerConfig
from ..private_files import private_dir
from ..secrets import write_private

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
CERT_DAYS = 825


@dataclass(frozen=True, slots=True)
class Tls:
    context: ssl.SSLContext
    cert: Path
    fingerprint: str  # "SHA256:AB:CD:..." of the DER certificate
    self_signed: bool


def is_loopback_bind(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_peer(peer: object) -> bool:
    """The peer of a connection (``peername``): loopback, or a Unix socket."""
    if not isinstance(peer, tuple) or not peer:
        return True  # a Unix socket: this machine
    addr = str(peer[0])
    if addr.startswith("127.") or addr == "::1":
        return True
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


@functools.lru_cache(maxsize=8)
def typed_hosts(server: ServerConfig) -> tuple[str, ...]:
    """The Host names a remote client may use: the address the user bound (unless a
    wildcard) and the ones they listed in ``allowed_hosts``; no loopback name."""
    names = [*server.allowed_hosts]
    if server.host.lower() not in WILDCARDS:
        names.append(server.host.strip("[]").lower())
    return tuple(n for n in dict.fromkeys(names) if not is_loopback_bind(n))


def fingerprint(cert_pem: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _self_signed(folder: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    """A certificate and key for ``names`` (and loopback), made once and kept in ``folder``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OMEN Local (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private, hashes.SHA256())
    )
    private_dir(folder)
    write_private(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    write_private(cert, built.public_bytes(serialization.Encoding.PEM))
    return cert, key


def tls_for(server: ServerConfig, data_dir: Path) -> Tls | None:
    """The TLS to serve with: None on loopback; beyond it, the user's certificate or a
    self-signed one (made once). Raises OSError/ValueError for a certificate that cannot load."""
    if is_loopback_bind(server.host) and not server.tls_cert:
        return None
    if server.tls_cert and server.tls_key:
        cert, key, own = Path(server.tls_cert).expanduser(), Path(server.tls_key).expanduser(), False
    else:
        cert, key = _self_signed(data_dir / "tls", typed_hosts(server))
        own = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return Tls(context, cert, fingerprint(cert.read_bytes()), own)

