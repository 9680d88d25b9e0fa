"""Issue 21 item 7: `glyph serve --http` requires a token by default.

Glyph runs as the user runs it (`glyph serve --http`, Rune as a subprocess); another OS user
on the same machine (created with useradd: CI runs as root) tries to use it over loopback and
to read the token file. Without the token: 401, and the file is unreadable; with it: the tools.
`--no-auth` is refused beyond loopback and warned about loudly on it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from glyph.downstream import http_transport
from tests.security.glyph_attacker import run_as_attacker
from tests.security.glyph_util import glyph_env, spawn_glyph, write_config
from tests.security.test_glyph_issue19_fixes import free_port, wait_listening

ATTACK = r"""
import http.client, json, sys
port, token_file = int(sys.argv[1]), sys.argv[2]
out = {}
try:
    open(token_file).read()
    out["token_file"] = "READ"
except OSError as exc:
    out["token_file"] = type(exc).__name__
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}})
conn.request("POST", "/mcp", body, {"Content-Type": "application/json",
                                    "Accept": "application/json, text/event-stream"})
resp = conn.getresponse()
out["status"] = resp.status
out["www_authenticate"] = resp.getheader("WWW-Authenticate")
print(json.dumps(out))
"""


def attack(port: int, token_file: Path) -> dict[str, object]:
    done = run_as_attacker(ATTACK, str(port), str(token_file))
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def start(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = spawn_glyph(write_config(tmp_path), env or glyph_env(tmp_path), "--http", "--port", str(port),
                       "--prompt", "deny", *extra)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.stderr is not None
    return proc.stderr.read().decode(errors="replace")


@pytest.fixture
def open_tmp(tmp_path: Path) -> Iterator[Path]:
    """A folder the attacker can walk into (pytest's own tmp is 0700): the token must protect itself."""
    base = Path(tempfile.mkdtemp(prefix="glyph-auth-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_another_user_without_the_token_gets_401_and_cannot_read_it(open_tmp: Path) -> None:
    tmp_path = open_tmp
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "notes.txt").write_text("private\n")
    token_file = tmp_path / "data" / "http-token"
    proc, port = start(tmp_path)
    try:
        await wait_listening(port, proc)
        seen = attack(port, token_file)
        assert seen["status"] == 401 and str(seen["www_authenticate"]).startswith("Bearer"), seen
        assert seen["token_file"] == "PermissionError", seen
        st = token_file.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        async with httpx2.AsyncClient() as http:  # a wrong token is no better than none
            wrong = await http.post(f"http://127.0.0.1:{port}/mcp", json={},
                                    headers={"Authorization": "Bearer " + token[:-1] + "x"})
            assert wrong.status_code == 401
        transport = http_transport(f"http://127.0.0.1:{port}/mcp", {"Authorization": f"Bearer {token}"})
        async with Client(transport, cache=None) as client:
            assert "rune__read_file" in {t.name for t in (await client.list_tools()).tools}
    finally:
        first = stop(proc)
    assert first.count(token) == 1, "the new token is printed once, when it is created"

    proc, port = start(tmp_path)  # the next start uses the same token and does not print it
    try:
        await wait_listening(port, proc)
        transport = http_transport(f"http://127.0.0.1:{port}/mcp", {"Authorization": f"Bearer {token}"})
        async with Client(transport, cache=None) as client:
            assert (await client.call_tool("rune__list_directory", {"path": "."})).is_error is not None
    finally:
        second = stop(proc)
    assert token not in second and str(token_file) in second


async def test_a_token_file_made_readable_is_replaced_and_a_foreign_one_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    token_file = data / "http-token"
    token_file.write_text("x" * 43 + "\n")
    token_file.chmod(0o644)
    proc, port = start(tmp_path)
    try:
        await wait_listening(port, proc)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and stat.S_IMODE(data.stat().st_mode) == 0o700
        assert token_file.read_text().strip() != "x" * 43  # others could read it: a new token, not the old one
    finally:
        stop(proc)
    from tests.security.glyph_attacker import attacker

    os.chown(token_file, attacker().pw_uid, attacker().pw_gid)  # planted by another user: never trusted
    proc, _ = start(tmp_path)
    assert proc.wait(timeout=60) == 2
    assert proc.stderr is not None and "belongs to another user" in proc.stderr.read().decode()


async def test_no_auth_only_on_loopback_and_loudly(tmp_path: Path) -> None:
    proc, _ = start(tmp_path, "--no-auth", "--host", "0.0.0.0")
    assert proc.wait(timeout=60) == 2
    assert proc.stderr is not None and "only allowed on a loopback host" in proc.stderr.read().decode()

    proc, port = start(tmp_path, "--no-auth")
    try:
        await wait_listening(port, proc)
        seen = attack(port, tmp_path / "data" / "http-token")
        assert seen["status"] == 200  # what --no-auth means, and why it warns
    finally:
        err = stop(proc)
    assert "--no-auth" in err and "ANY process of ANY user" in err
    assert not (tmp_path / "data" / "http-token").exists()


@pytest.mark.parametrize("host", ["127.0.0.1"])
async def test_glyph_http_token_env_still_sets_the_token(tmp_path: Path, host: str) -> None:
    env = {**glyph_env(tmp_path), "GLYPH_HTTP_TOKEN": "from-the-environment-0123456789"}
    proc, port = start(tmp_path, "--host", host, env=env)
    try:
        await wait_listening(port, proc)
        async with httpx2.AsyncClient() as http:
            assert (await http.post(f"http://{host}:{port}/mcp", json={})).status_code == 401
        transport = http_transport(f"http://{host}:{port}/mcp",
                                   {"Authorization": "Bearer from-the-environment-0123456789"})
        async with Client(transport, cache=None) as client:
            assert (await client.list_tools()).tools
    finally:
        stop(proc)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
async def test_a_non_loopback_host_is_refused_plain_http_would_carry_the_token_in_clear(
        tmp_path: Path, host: str) -> None:
    proc, _ = start(tmp_path, "--host", host)
    try:
        assert proc.wait(timeout=30) == 2
    finally:
        if proc.poll() is None:
            stop(proc)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "not a loopback address" in err and "TLS reverse proxy" in err
    assert not (tmp_path / "data" / "http-token").exists()  # refused before any token is made
