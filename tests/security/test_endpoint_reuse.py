"""Security review of the endpoint file: a reused pid and a cached proof.

- The endpoint file is the user's own; a pid in it that the user may not signal (EPERM)
  belongs to another account, so it is not the OMEN that wrote the file: the file is stale.
  (Run for real: the test drops its effective uid to ``nobody`` and looks at a process of
  the attacker account.)
- The client kit remembers a server that proved it is the file's OMEN. A new server run
  writes a new proof key; a server proven for the old key must prove itself again.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from omen_local import endpoint
from omen_local.client import OmenClient
from omen_local.client.fallback import Backoff
from omen_local.secrets import write_private

from .conftest import Squat, free_port

NOBODY = 65534


def test_a_pid_of_another_user_makes_the_endpoint_file_stale(tmp_path: Path, squat: Squat) -> None:
    other = squat(free_port())  # a process of the attacker account, alive
    pid = other.proc.pid
    info = endpoint.EndpointInfo(url="http://127.0.0.1:1", pid=pid, version="x", token="t" * 20, user="local",
                                 started=0.0, stamp=endpoint.process_stamp(pid), proof_key="ab" * 32)
    os.seteuid(NOBODY)  # an ordinary user now: root may signal anyone
    try:
        alive = endpoint.pid_alive(pid)
        why = endpoint.staleness(info)
    finally:
        os.seteuid(0)
    assert alive is False
    assert why is not None and str(pid) in why


class _Hello(http.server.BaseHTTPRequestHandler):
    key = ""
    url = ""
    tokens: list[str] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        if auth:
            self.tokens.append(auth)
        nonce = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("nonce", [""])[0]
        body = json.dumps({"proof": endpoint.proof(self.key, nonce, self.url)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hello_server() -> Iterator[tuple[str, type[_Hello]]]:
    handler: type[_Hello] = type("Hello", (_Hello,), {"tokens": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    handler.url = url
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url, handler
    finally:
        server.shutdown()
        server.server_close()


def _write(tmp_path: Path, url: str, key: str, token: str) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    info = {"url": url, "pid": os.getpid(), "version": "x", "token": token, "user": "local", "started": 0.0,
            "stamp": endpoint.process_stamp(os.getpid()), "proof_key": key}
    write_private(endpoint.path_for(data), json.dumps(info).encode())


def test_a_proof_is_remembered_per_server_run_not_per_url_and_pid(
        tmp_path: Path, hello_server: tuple[str, type[_Hello]]) -> None:
    url, handler = hello_server
    handler.key = "11" * 32
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    _write(tmp_path, url, handler.key, "first-run-token-0123456789")
    with OmenClient(config=cfg, environ={}, backoff=Backoff(initial_s=0.01, cap_s=0.02), fetch_cost=False) as c:
        assert c.find_omen().url == url  # proven with the first run's key
        _write(tmp_path, url, "22" * 32, "second-run-token-0123456789")  # a new run; same url and pid
        target = c.find_omen()
        assert target.url is None and target.token is None, "a server proven for an old key got the new token"
        assert target.problem is not None and "not verified" in target.problem
        handler.key = "22" * 32  # the new run's server answers: proven again
        assert c.find_omen().token == "second-run-token-0123456789"
    assert handler.tokens == []  # proving sends no token


def test_the_async_kit_remembers_proofs_per_server_run_too(
        tmp_path: Path, hello_server: tuple[str, type[_Hello]]) -> None:
    import asyncio

    from omen_local.client import AsyncOmenClient

    url, handler = hello_server
    handler.key = "33" * 32
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    _write(tmp_path, url, handler.key, "first-run-token-0123456789")

    async def run() -> None:
        async with AsyncOmenClient(config=cfg, environ={}, backoff=Backoff(initial_s=0.01, cap_s=0.02),
                                   fetch_cost=False) as c:
            assert (await c.find_omen()).url == url
            _write(tmp_path, url, "44" * 32, "second-run-token-0123456789")
            target = await c.find_omen()
            assert target.url is None and target.token is None

    asyncio.run(run())
