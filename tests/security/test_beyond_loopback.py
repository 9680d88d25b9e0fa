"""Binding beyond loopback: TLS only, client tokens only, and only the Host names the user typed.

OMEN bound to this machine's LAN address (not loopback); a "remote" client is one whose
connection comes from that address (the kernel gives it as the peer, as it would another
machine's). Over plain HTTP the bearer token would travel in clear, and ``Host: localhost``
would pass the loopback check.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from omen_local import endpoint
from omen_local.server.exposure import fingerprint

from .conftest import free_port, omen_cli, omen_env, start_omen

OWNER = "omen-owner-token-for-the-test-0123456789"


def _lan_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the kernel picks the outgoing address
            addr = str(s.getsockname()[0])
        except OSError:
            addr = ""
    if not addr or addr.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to bind")
    return addr


def _get(url_host: str, port: int, path: str, token: str, host_header: str, cert: Path | None) -> tuple[int, Any]:
    if cert is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(url_host, port, timeout=10)
    else:
        ctx = endpoint.client_context(cert)
        conn = http.client.HTTPSConnection(url_host, port, timeout=10, context=ctx)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Host": host_header})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_beyond_loopback_tls_client_tokens_and_typed_hosts_only(tmp_path: Path) -> None:
    lan, port = _lan_address(), free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[server]\nhost = "{lan}"\nport = {port}\nallowed_hosts = ["omen.lan"]\n\n'
                   f'[storage]\ndata_dir = "{tmp_path / "data"}"\n\n[defaults]\nhealth_interval_s = 3600\n\n'
                   '[providers.ollama]\nbase_url = "http://127.0.0.1:9"\ndiscover = false\n')
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    made = omen_cli("token", "create", "--user", "laptop", "--config", str(cfg), env=env)
    client_token = made.stdout.strip().splitlines()[-1]
    omen = start_omen(cfg, env)
    try:
        assert omen.url == f"https://{lan}:{port}", omen.url
        printed = "".join(omen.lines)
        cert = tmp_path / "data" / "tls" / "cert.pem"
        assert fingerprint(cert.read_bytes()) in printed  # shown, to pin on the client
        assert (cert.parent / "key.pem").stat().st_mode & 0o077 == 0
        where = f"{lan}:{port}"
        # plain HTTP: refused (the TLS listener does not speak it)
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            _get(lan, port, "/v1/models", client_token, where, None)
        assert _get(lan, port, "/v1/models", client_token, where, cert)[0] == 200
        assert _get(lan, port, "/v1/models", client_token, f"omen.lan:{port}", cert)[0] == 200
        status, body = _get(lan, port, "/v1/models", OWNER, where, cert)
        assert status == 403 and body["error"]["code"] == "client_token_required", body
        status, body = _get(lan, port, "/v1/models", client_token, f"localhost:{port}", cert)
        assert status == 403 and body["error"]["code"] == "forbidden_host", body
        status, body = _get(lan, port, "/v1/omen/status", client_token, where, cert)
        assert status == 200 and body["tls"]["fingerprint"].startswith("SHA256:")
        # the CLI on this machine verifies the server over TLS and is refused the owner's reload
        # from a non-loopback peer: it says so, and nothing else is sent
        done = omen_cli("provider", "disable", "ollama", "--config", str(cfg), env=env)
        assert done.returncode == 0, done.stderr
        assert "only a client token" in done.stdout, done.stdout
        doctor = omen_cli("doctor", "--config", str(cfg), "--timeout", "3", env=env)
        assert f"OMEN is already running on {lan}:{port}" in doctor.stdout, doctor.stdout
    finally:
        omen.stop()


def test_a_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\ntls_cert = "/nowhere/cert.pem"\n')
    done = omen_cli("config", "--config", str(cfg), env=omen_env(tmp_path))
    assert done.returncode == 2 and "tls_key" in done.stderr
