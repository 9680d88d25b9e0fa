"""The endpoint file: how clients on this machine find a running OMEN without configuration.

A running OMEN writes ``endpoint.json`` (mode 0600) in its data dir: its URL, pid, version
and a token meant for clients (user ``local``), and removes it when it stops. Clients read
it (``omen_local.client``) and must not trust it blindly: a file left by a killed server
names a dead pid, or after a reboot a pid that now belongs to someone else, and a new
server may listen on that port. :func:`read` checks the pid (and, on Linux, the process's
start time and the boot) so that a client never sends the token to a stranger.

This module is imported by the client kit: it must stay free of server imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .secrets import write_private

if TYPE_CHECKING:
    from .secrets import SecretStore
    from .service import OmenService
    from .tokens import TokenBook

log = logging.getLogger(__name__)

FILE_NAME = "endpoint.json"
CLIENT_SECRET = "endpoint-client-token"  # the plain client token, kept like the owner's
CLIENT_USER = "local"
CLIENT_LABEL = "endpoint file: clients on this machine"  # tokens.ENDPOINT_LABEL: only it may name "local"
HELLO_PATH = "/v1/omen/hello"
VERIFY_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    url: str  # the server's root URL (the OpenAI API is under /v1)
    pid: int
    version: str
    token: str
    user: str
    started: float
    stamp: str | None = None  # boot id and process start time (Linux), to spot a reused pid
    stale: str | None = None  # why the file cannot be trusted, or None
    path: Path | None = None
    proof_key: str | None = None  # the server proves it holds this before it gets a token
    tls_cert: str | None = None  # beyond loopback OMEN serves TLS: its certificate, to trust


def path_for(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def process_stamp(pid: int) -> str | None:
    """The boot id and start time of ``pid`` (Linux), or None where that cannot be known."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None  # field 22 of stat: starttime


def pid_alive(pid: int) -> bool | None:
    """Is ``pid`` alive and ours: True/False where the OS can tell; None where it cannot
    (Windows: os.kill would signal). A pid we may not signal (EPERM) belongs to another
    user: the endpoint file is ours, so that process is not our OMEN (the pid was reused)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # alive, but someone else's: not the OMEN that wrote our file
    return True


def loopback_url(url: str) -> str:
    """A wildcard bind address is not something to connect to (nor a Host OMEN accepts)."""
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")


def client_token(tokens: TokenBook, secrets: SecretStore) -> str:
    """The token for clients on this machine: made once (stored hashed, like any client
    token), kept in the secret store so it survives restarts; made anew if it was revoked."""
    token = secrets.get(CLIENT_SECRET)
    if token:
        ident = tokens.identify(token)
        if ident is not None and not tokens.is_owner(ident):
            return token
    token = tokens.create(CLIENT_USER, label=CLIENT_LABEL)
    secrets.set(CLIENT_SECRET, token)
    return token


def new_proof_key() -> str:
    return secrets.token_hex(32)


def proof(key: str, nonce: str, url: str) -> str:
    """What the server at ``url`` answers to ``nonce`` if it holds ``key``."""
    return hmac.new(key.encode(), f"{nonce}|{url.rstrip('/')}".encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


def hello_url(url: str, nonce: str) -> str:
    return f"{url.rstrip('/')}{HELLO_PATH}?{urllib.parse.urlencode({'nonce': nonce})}"


def check_hello(info: EndpointInfo, nonce: str, body: bytes) -> str | None:
    """Why the answer ``body`` to ``nonce`` does not prove the server is the file's OMEN, or None."""
    if not info.proof_key:
        return "the endpoint file has no proof key (written by an older OMEN: restart it)"
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    got = answer.get("proof") if isinstance(answer, dict) else None
    if isinstance(got, str) and hmac.compare_digest(got, proof(info.proof_key, nonce, info.url)):
        return None
    return f"the server at {info.url} is not the OMEN that wrote {info.path or FILE_NAME}"


def verify(info: EndpointInfo, timeout: float = VERIFY_TIMEOUT_S) -> str | None:
    """Blocking: None if the server at ``info.url`` proves it is the OMEN of the endpoint
    file, else why not. Sends no token. For the CLI; the client kit does the same over its
    own HTTP client (:func:`new_nonce`, :func:`hello_url`, :func:`check_hello`)."""
    if info.stale is not None:
        return info.stale
    nonce = new_nonce()
    opener = no_redirect_opener(info)
    try:
        with opener.open(hello_url(info.url, nonce), timeout=timeout) as resp:
            body = resp.read(64 * 1024)
    except urllib.error.HTTPError as err:
        return f"the server at {info.url} does not answer OMEN's challenge (HTTP {err.code})"
    except OSError as exc:
        return f"cannot reach {info.url} ({exc})"
    return check_hello(info, nonce, body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is not a proof, and a token must not follow one


def no_redirect_opener(info: EndpointInfo | None = None) -> urllib.request.OpenerDirector:
    """urllib without proxies (local traffic) and without redirects, trusting OMEN's TLS
    certificate when it serves TLS (bound beyond loopback)."""
    cert = Path(info.tls_cert) if info is not None and info.tls_cert else None
    https = urllib.request.HTTPSHandler(context=client_context(cert))
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect, https)


def client_context(cert: Path | None) -> ssl.SSLContext:
    """What a local client trusts to reach OMEN over TLS: the system's CAs, plus OMEN's own
    certificate (self-signed, or the user's) as an anchor of its own."""
    context = ssl.create_default_context()
    cert = cert.expanduser() if cert is not None else None
    if cert is not None and cert.exists():
        context.load_verify_locations(cafile=str(cert))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def hello_answer(service: OmenService, nonce: str) -> str:
    """The server's side of :func:`verify`: the proof for ``nonce`` at the URL it publishes."""
    return proof(service.proof_key, nonce, loopback_url(service.url))


def publish(service: OmenService) -> Path | None:
    """Write the endpoint file for a started service; a failure is logged, never raised."""
    path = path_for(service.config.data_dir)
    try:
        info = {
            "url": loopback_url(service.url),
            "pid": os.getpid(),
            "version": __version__,
            "token": client_token(service.tokens, service.secrets),
            "user": CLIENT_USER,
            "started": time.time(),
            "stamp": process_stamp(os.getpid()),
            "proof_key": service.proof_key,
            "tls_cert": str(service.tls.cert) if service.tls is not None else None,
        }
        write_private(path, json.dumps(info, indent=1).encode())
    except Exception as exc:  # clients then need OMEN_BASE_URL/OMEN_TOKEN; serving goes on
        log.warning("could not publish the endpoint file %s: %s", path, exc)
        return None
    return path


def remove(service: OmenService) -> None:
    """Remove the endpoint file if it is still ours (another server may have replaced it)."""
    path = path_for(service.config.data_dir)
    info = read(path, check=False)
    if info is not None and info.pid == os.getpid() and info.url == loopback_url(service.url):
        with contextlib.suppress(OSError):
            path.unlink()


def _parse(raw: Any, path: Path) -> EndpointInfo | None:
    if not isinstance(raw, dict):
        return None
    url, pid, token = raw.get("url"), raw.get("pid"), raw.get("token")
    if not (isinstance(url, str) and url.startswith("http") and isinstance(pid, int) and isinstance(token, str)):
        return None
    stamp = raw.get("stamp")
    started = raw.get("started")
    key = raw.get("proof_key")
    cert = raw.get("tls_cert")
    return EndpointInfo(
        url=url.rstrip("/"),
        pid=pid,
        version=str(raw.get("version", "")),
        token=token,
        user=str(raw.get("user", CLIENT_USER)),
        started=float(started) if isinstance(started, int | float) else 0.0,
        stamp=stamp if isinstance(stamp, str) else None,
        path=path,
        proof_key=key if isinstance(key, str) and key else None,
        tls_cert=cert if isinstance(cert, str) and cert else None,
    )


def staleness(info: EndpointInfo) -> str | None:
    """Why ``info`` cannot be trusted (its server is gone), or None."""
    alive = pid_alive(info.pid)
    if alive is False:
        return f"its server (pid {info.pid}) is not running (or the pid now belongs to another user)"
    if info.stamp is not None:
        now = process_stamp(info.pid)
        if now is not None and now != info.stamp:
            return f"pid {info.pid} now belongs to another process"
    return None


def read(path: Path, *, check: bool = True) -> EndpointInfo | None:
    """The endpoint file at ``path``, or None if absent or unreadable. With ``check``, a
    file whose server is gone comes back with ``stale`` set: use neither its URL nor its token."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        raw = json.loads(data)
    except (OSError, ValueError):
        return None
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return None  # someone else's file could send our prompts to their server
    info = _parse(raw, path)
    if info is None or not check:
        return info
    why = staleness(info)
    return info if why is None else dataclasses.replace(info, stale=why)
