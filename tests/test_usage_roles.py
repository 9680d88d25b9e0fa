"""Who reads whose usage: a client token its own user's, the owner and a team-admin token everyone's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omen_local.secrets import SecretStore
from omen_local.tokens import TEAM_ADMIN, TokenBook
from tests import metering_util as mu
from tests.conftest import Stack


async def test_a_team_admin_reads_everyone_and_a_user_reads_their_own(stack: Stack) -> None:
    bob = stack.service.tokens.create("bob")
    carol = stack.service.tokens.create("carol")
    admin = stack.service.tokens.create("dana", role=TEAM_ADMIN)
    for token in (bob, bob, carol):
        status, _, _ = await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG}, token)
        assert status == 200

    status, body = await mu.get_json(stack, "/v1/usage", admin, group_by="user")
    assert status == 200
    assert {row["user"]: row["requests"] for row in body["data"]} == {"bob": 2, "carol": 1}
    status, body = await mu.get_json(stack, "/v1/usage", bob, group_by="user")
    assert status == 200 and {row["user"]: row["requests"] for row in body["data"]} == {"bob": 2}
    status, body = await mu.get_json(stack, "/v1/usage", bob, user="carol")
    assert status == 403 and body["error"]["code"] == "usage_forbidden"

    status, body = await mu.get_json(stack, "/v1/usage/instances", admin)
    assert status == 200
    assert {(row["instance"], row["user"]): row["requests"] for row in body["data"]} == {("local", "bob"): 2, ("local", "carol"): 1}
    status, body = await mu.get_json(stack, "/v1/usage/instances", carol)
    assert [(row["user"], row["requests"]) for row in body["data"]] == [("carol", 1)]
    status, body = await mu.get_json(stack, "/v1/usage/instances", admin, bogus="1")
    assert status == 400


def test_unknown_roles_are_refused(stack: Stack) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        stack.service.tokens.create("eve", role="root")


def test_the_cli_creates_a_team_admin_token(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    env = {**os.environ, "OMEN_SECRETS": "file"}
    out = subprocess.run(
        [sys.executable, "-m", "omen_local", "token", "create", "--config", str(cfg), "--user", "dana", "--role", "team-admin"],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    token = out.stdout.strip()
    book = TokenBook(tmp_path / "data", SecretStore(tmp_path / "data", use_keyring=False))
    identity = book.identify(token)
    assert identity is not None and identity.user == "dana" and identity.role == TEAM_ADMIN
    assert book.reads_everyone(identity)
    assert not book.reads_everyone(book.identify(book.create("erin")))  # type: ignore[arg-type]
