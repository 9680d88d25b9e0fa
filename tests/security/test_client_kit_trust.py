"""Item 4: the client kit (and ``omen ask``, which uses it) verifies that it talks to the OMEN of
the endpoint file before it sends a token, and uses a degraded-mode Ollama only when that
port's socket is the user's own.

The attacker (another OS user) holds the port the endpoint file names while the file's pid
is alive (the stale check alone does not catch it), the default OMEN port for ``OMEN_TOKEN``
with no endpoint file, and Ollama's port for degraded mode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omen_local import endpoint
from omen_local.client import OmenClient, Unavailable, discovery
from omen_local.client.fallback import Backoff
from omen_local.secrets import write_private

from .conftest import Squat, free_port, omen_cli, omen_env

PROMPT = "the merger closes on friday"
FILE_TOKEN = "omen-client-token-from-the-endpoint-file"
ENV_TOKEN = "omen-token-from-the-environment-0123"


def _config(tmp_path: Path, ollama_port: int) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n\n'
                   f'[providers.ollama]\nkind = "ollama"\nbase_url = "http://127.0.0.1:{ollama_port}"\n')
    return cfg


def _endpoint_file(tmp_path: Path, port: int) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    info = {"url": f"http://127.0.0.1:{port}", "pid": os.getpid(), "version": "x", "token": FILE_TOKEN,
            "user": "local", "started": 0.0, "stamp": endpoint.process_stamp(os.getpid()), "proof_key": "cd" * 32}
    write_private(endpoint.path_for(data), json.dumps(info).encode())


def _client(cfg: Path, **environ: str) -> OmenClient:
    return OmenClient(config=cfg, environ=environ, backoff=Backoff(initial_s=0.01, cap_s=0.02), fetch_cost=False)


def test_the_endpoint_files_port_held_by_another_user_gets_no_token_and_no_prompt(tmp_path: Path, squat: Squat) -> None:
    omen_port, ollama = free_port(), squat(free_port())
    fake_omen = squat(omen_port)
    cfg = _config(tmp_path, ollama.port)
    _endpoint_file(tmp_path, omen_port)
    with _client(cfg) as client, pytest.raises(Unavailable) as err:
        client.chat([{"role": "user", "content": PROMPT}])
    assert FILE_TOKEN not in " ".join(fake_omen.tokens_seen()), "the endpoint file's token went to another user"
    assert PROMPT not in fake_omen.bodies() + ollama.bodies(), "another user's server got the prompt"
    assert "not verified" in str(err.value) and "belongs to another user" in str(err.value), str(err.value)


def test_omen_token_without_an_endpoint_file_is_not_sent_to_a_squatted_default_port(
        tmp_path: Path, squat: Squat, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    fake_omen = squat(port)
    monkeypatch.setattr(discovery, "DEFAULT_URL", f"http://127.0.0.1:{port}")  # 8765 stays untouched
    cfg = _config(tmp_path, free_port())
    with _client(cfg, OMEN_TOKEN=ENV_TOKEN) as client, pytest.raises(Unavailable):
        client.chat([{"role": "user", "content": PROMPT}])
    assert ENV_TOKEN not in " ".join(fake_omen.tokens_seen()), "OMEN_TOKEN went to another user's server"
    assert PROMPT not in fake_omen.bodies()


def test_omen_ask_sends_nothing_to_a_squatter(tmp_path: Path, squat: Squat) -> None:
    omen_port, ollama = free_port(), squat(free_port())
    fake_omen = squat(omen_port)
    cfg = _config(tmp_path, ollama.port)
    _endpoint_file(tmp_path, omen_port)
    done = omen_cli("ask", "--config", str(cfg), PROMPT, env=omen_env(tmp_path))
    assert done.returncode != 0
    assert FILE_TOKEN not in " ".join(fake_omen.tokens_seen())
    assert PROMPT not in fake_omen.bodies() + ollama.bodies()
