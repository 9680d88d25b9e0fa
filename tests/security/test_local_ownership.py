"""Item 2: a listener on a local model server's port is trusted only when its socket is the user's.

Another user's process on Ollama's port (and on an address discovery probes) must get no
prompt, and its answers must never come back as ``ollama``: the request fails with a 503
that names the reason, ``/v1/omen/status`` and ``omen doctor`` say it too. A provider the
user configured with ``trust_owner`` (Linux packages run Ollama as the ``ollama`` user) is used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from omen_local import local_trust

from .conftest import SQUATTER_SRC, Squat, free_port, omen_cli, omen_env, start_omen, wait_for

OWNER = "omen-owner-token-for-the-test-0123456789"
PROMPT = "my secret plan for the quarter"


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {OWNER}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {OWNER}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _config(tmp_path: Path, ollama_port: int, lmstudio_port: int, trust: str | None = None) -> Path:
    cfg = tmp_path / "config.toml"
    trust_line = f'trust_owner = "{trust}"\n' if trust else ""
    cfg.write_text(f'[server]\nport = 0\n\n[storage]\ndata_dir = "{tmp_path / "data"}"\n\n'
                   '[defaults]\nhealth_interval_s = 3600\n\n'
                   f'[providers.ollama]\nkind = "ollama"\nbase_url = "http://127.0.0.1:{ollama_port}"\n{trust_line}\n'
                   f'[discovery]\nextra = ["http://127.0.0.1:{lmstudio_port}/v1"]\n')
    return cfg


def test_another_users_listener_gets_no_prompt(tmp_path: Path, squat: Squat) -> None:
    ollama, lmstudio = squat(free_port()), squat(free_port())
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    omen = start_omen(_config(tmp_path, ollama.port, lmstudio.port), env)
    try:
        for model in ("auto", "auto-local", "ollama/squat:latest"):
            status, body = _post(f"{omen.url}/v1/chat/completions",
                                 {"model": model, "messages": [{"role": "user", "content": PROMPT}]})
            assert status == 503, (model, status, body)
            assert "belongs to another user" in json.dumps(body), body
        assert PROMPT not in ollama.bodies() + lmstudio.bodies(), "another user's server got the prompt"
        assert not [r for r in ollama.seen + lmstudio.seen if r["method"] == "POST"]
        providers = _get(f"{omen.url}/v1/omen/status")["providers"]
        assert providers["ollama"]["usable"] is False
        assert f"127.0.0.1:{ollama.port} belongs to another user" in providers["ollama"]["reason"]
        assert not any(p.get("found") and p.get("usable") for p in providers.values()), providers
    finally:
        omen.stop()
    doctor = omen_cli("doctor", "--config", str(tmp_path / "config.toml"), "--timeout", "2", env=env)
    assert f"127.0.0.1:{ollama.port} belongs to another user" in doctor.stdout, doctor.stdout


def test_trust_owner_names_the_account_the_user_accepts(tmp_path: Path, squat: Squat, attacker: str) -> None:
    ollama, lmstudio = squat(free_port()), squat(free_port())
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    omen = start_omen(_config(tmp_path, ollama.port, lmstudio.port, trust=attacker), env)
    try:
        status, body = _post(f"{omen.url}/v1/chat/completions",
                             {"model": "ollama/squat:latest", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "PWNED"
    finally:
        omen.stop()


def test_socket_owner_from_proc(squat: Squat, attacker: str) -> None:
    sq = squat(free_port())
    why = local_trust.distrust(f"http://127.0.0.1:{sq.port}")
    assert why is not None and "belongs to another user" in why and attacker in why
    assert local_trust.distrust(f"http://127.0.0.1:{sq.port}", trust_owner=attacker) is None
    assert local_trust.distrust(f"http://localhost:{free_port()}") is None  # nobody listens: nothing to send to
    assert local_trust.distrust("https://api.openai.com/v1") is None  # not this module's question
    wait_for(lambda: sq.proc.poll() is None, "the squatter to be alive")
    assert os.getuid() not in local_trust.listeners(sq.port).uids


def test_a_port_that_changes_hands_while_omen_runs_is_dropped(tmp_path: Path, squat: Squat) -> None:
    """The user's model server stops; another user binds its port before the next health
    round (an hour away here): within about a second OMEN stops sending there."""
    port = free_port()
    own = subprocess.Popen(["/usr/bin/python3", "-c", SQUATTER_SRC, "127.0.0.1", str(port)],
                           stdout=subprocess.PIPE, text=True)
    assert own.stdout is not None and own.stdout.readline().startswith("READY")
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    omen = start_omen(_config(tmp_path, port, free_port()), env)
    try:
        chat = {"model": "ollama/squat:latest", "messages": [{"role": "user", "content": "hi"}]}
        assert _post(f"{omen.url}/v1/chat/completions", chat)[0] == 200  # the user's own: used
        own.kill()
        own.wait()
        sq = squat(port)
        wait_for(lambda: _get(f"{omen.url}/v1/omen/status")["providers"]["ollama"]["usable"] is False,
                 "OMEN to notice the port changed hands", deadline_s=10)
        status, body = _post(f"{omen.url}/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": PROMPT}]})
        assert status == 503 and "belongs to another user" in json.dumps(body), body
        assert PROMPT not in sq.bodies()
    finally:
        omen.stop()
        if own.poll() is None:
            own.kill()
            own.wait()


@pytest.mark.parametrize(("family", "address"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"),
                                                 (socket.AF_INET6, "::1"), (socket.AF_INET6, "::")])
def test_the_kernels_tables_are_read_for_every_loopback_and_wildcard_listener(family: int, address: str) -> None:
    """/proc/net/tcp and tcp6 as this kernel writes them: the listener's uid is found."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp here (not Linux)")
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as exc:
            pytest.skip(f"cannot bind {address} here ({exc})")
        s.listen()
        port = s.getsockname()[1]
        assert local_trust.listeners(port).uids == {os.getuid()}
        assert local_trust.distrust(f"http://localhost:{port}") is None
    assert local_trust.listeners(port).uids == frozenset()


def test_a_busy_port_finds_its_listener_among_its_connections() -> None:
    """Under load the tables hold many connections to and from the port: only the LISTEN
    line counts (the parser skips the rest without splitting them), as the kernel writes it."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp here (not Linux)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            text = "".join(path.read_text() for path in local_trust.PROC_TABLES if path.exists())
            assert text.count(f":{port:04X} ") >= 80  # the connections are in the table, both ends
            assert local_trust.parse_proc_net(text, port) == {os.getuid()}
            other = clients[0].getsockname()[1]  # a client's port: connections only, no listener
            assert local_trust.parse_proc_net(text, other) == set()
        finally:
            for s in clients + accepted:
                s.close()


@pytest.mark.parametrize(("family", "address"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::")])
def test_netlink_and_proc_name_the_same_owner_and_proc_stands_in(
    family: int, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's sock_diag answer (0.1 ms) and its /proc tables (~20 ms: a walk of the whole
    connection table) agree; where netlink is refused, /proc answers alone."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("not Linux")
    from omen_local import sock_diag

    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as exc:
            pytest.skip(f"cannot bind {address} here ({exc})")
        s.listen()
        port = s.getsockname()[1]
        found = [entry for entry in sock_diag.listeners() if entry.port == port]
        assert [(str(e.address), e.uid) for e in found] == [(address, os.getuid())]
        proc = local_trust._proc(port)
        assert proc is not None and proc.uids == {os.getuid()}

        def refused() -> list[sock_diag.Listener]:
            raise PermissionError(1, "netlink is not allowed here")

        monkeypatch.setattr(sock_diag, "listeners", refused)
        assert local_trust.listeners(port).uids == {os.getuid()}


def test_an_answer_netlink_cannot_read_falls_back_to_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated or odd sock_diag reply (ValueError, struct.error) is not a crash of distrust()."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("not Linux")
    import struct as _struct

    from omen_local import sock_diag

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for exc in (ValueError("short address"), _struct.error("unpack requires a buffer")):

            def broken(exc: Exception = exc) -> list[sock_diag.Listener]:
                raise exc

            monkeypatch.setattr(sock_diag, "listeners", broken)
            assert local_trust.listeners(port).uids == {os.getuid()}
