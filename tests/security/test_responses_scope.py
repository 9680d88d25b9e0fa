"""Item 11: stored Responses belong to a user *and* a workspace; ``owner`` and ``local`` are not
names a client token may take (they would read the owner's responses and usage).

A real ``omen serve`` with a model server of this user's; tokens made with ``omen token create``.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .conftest import SQUATTER_SRC, free_port, omen_cli, omen_env, start_omen

OWNER = "omen-owner-token-for-the-test-0123456789"


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_response_is_read_only_in_the_workspace_it_was_made_in(tmp_path: Path) -> None:
    port = free_port()
    model = subprocess.Popen(["/usr/bin/python3", "-c", SQUATTER_SRC, "127.0.0.1", str(port)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert model.stdout is not None and model.stdout.readline().startswith("READY")
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[server]\nport = 0\n\n[storage]\ndata_dir = "{tmp_path / "data"}"\n\n'
                       f'[providers.ollama]\nkind = "ollama"\nbase_url = "http://127.0.0.1:{port}"\n')
        env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
        tokens = {}
        for ws in ("A", "B"):
            made = omen_cli("token", "create", "--user", "alice", "--workspace", ws, "--config", str(cfg), env=env)
            assert made.returncode == 0, made.stderr
            tokens[ws] = made.stdout.strip().splitlines()[-1]
        omen = start_omen(cfg, env)
        try:
            status, made_in_b = _call("POST", f"{omen.url}/v1/responses", tokens["B"],
                                      {"model": "ollama/squat:latest", "input": "the plan for workspace B"})
            assert status == 200, made_in_b
            rid = made_in_b["id"]
            assert _call("GET", f"{omen.url}/v1/responses/{rid}", tokens["B"])[0] == 200
            status, body = _call("GET", f"{omen.url}/v1/responses/{rid}", tokens["A"])
            assert status == 404, ("a workspace-A token read a response made in workspace B", body)
            status, body = _call("POST", f"{omen.url}/v1/responses", tokens["A"],
                                 {"model": "ollama/squat:latest", "input": "go on", "previous_response_id": rid})
            assert status == 400 and body["error"]["code"] == "previous_response_not_found", body
            assert _call("DELETE", f"{omen.url}/v1/responses/{rid}", tokens["A"])[0] == 404
            assert _call("GET", f"{omen.url}/v1/responses/{rid}", tokens["B"])[0] == 200
        finally:
            omen.stop()
    finally:
        model.kill()
        model.wait()


def test_owner_and_local_are_reserved_user_names(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    for name in ("owner", "local", "Owner", " local "):
        made = omen_cli("token", "create", "--user", name, "--config", str(cfg), env=env)
        assert made.returncode == 2, (name, made.stdout)
        assert "reserved" in made.stderr
    assert omen_cli("token", "create", "--user", "alice", "--config", str(cfg), env=env).returncode == 0


def test_client_tokens_made_before_the_names_were_reserved_are_refused(tmp_path: Path) -> None:
    from omen_local import endpoint, tokens
    from omen_local.secrets import SecretStore

    assert tokens.ENDPOINT_LABEL == endpoint.CLIENT_LABEL
    data = tmp_path / "data"
    book = tokens.TokenBook(data, SecretStore(data, use_keyring=False), owner_token=OWNER)
    as_owner = book.create("owner")  # what `omen token create --user owner` did before
    as_local = book.create("local", label="my script")
    real_local = book.create("local", label=endpoint.CLIENT_LABEL)
    fresh = tokens.TokenBook(data, SecretStore(data, use_keyring=False), owner_token=OWNER)
    assert fresh.identify(as_owner) is None and fresh.identify(as_local) is None
    ident = fresh.identify(real_local)
    assert ident is not None and ident.user == "local"
    assert fresh.is_owner(fresh.identify(OWNER))  # type: ignore[arg-type]
