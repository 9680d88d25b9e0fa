"""Item 1: no command sends the owner's token to a server it has not verified as this user's OMEN.

OMEN is killed (its endpoint file stays), another user binds its port; ``omen provider add``
and ``omen provider disable`` must not send ``POST /v1/omen/reload`` with the owner token
there, nor claim that "the running OMEN uses it now". Also when the file names a live pid
(the stale check alone does not catch that): the server must prove it holds the file's secret.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omen_local import endpoint
from omen_local.secrets import write_private

from .conftest import Squat, free_port, omen_cli, omen_env, start_omen

OWNER = "omen-owner-token-for-the-test-0123456789"


def _config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[server]\nport = {port}\n\n[storage]\ndata_dir = "{tmp_path / "data"}"\n\n'
                   '[defaults]\nhealth_interval_s = 3600\n\n[providers.ollama]\nbase_url = "http://127.0.0.1:9"\n'
                   'discover = false\n')
    return cfg


def test_killed_omen_port_squatted_gets_no_token(tmp_path: Path, squat: Squat) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    omen = start_omen(cfg, env)
    endpoint_file = endpoint.path_for(tmp_path / "data")
    assert endpoint_file.exists()
    omen.kill()  # crash: the endpoint file stays
    assert endpoint_file.exists()
    sq = squat(port)
    done = omen_cli("provider", "add", "extra", "http://127.0.0.1:9/v1", "--kind", "openai", "--config", str(cfg), env=env)
    assert done.returncode == 0, done.stderr
    assert OWNER not in " ".join(sq.tokens_seen()), "the owner's token went to another user's server"
    assert not any(r["path"] == "/v1/omen/reload" for r in sq.seen)
    assert "uses it now" not in done.stdout
    assert "not running" in done.stdout or "not verified" in done.stdout, done.stdout


def test_endpoint_file_with_live_pid_pointing_at_squatter_gets_no_token(tmp_path: Path, squat: Squat) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    sq = squat(port)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    # The pid is alive and its stamp matches (this test's own process): only a proof tells.
    info = {"url": f"http://127.0.0.1:{port}", "pid": os.getpid(), "version": "x", "token": "client-token",
            "user": "local", "started": 0.0, "stamp": endpoint.process_stamp(os.getpid()),
            "proof_key": "ab" * 32}
    write_private(endpoint.path_for(data), json.dumps(info).encode())
    assert endpoint.read(endpoint.path_for(data)) is not None
    done = omen_cli("provider", "disable", "ollama", "--config", str(cfg), env=env)
    assert done.returncode == 0, done.stderr
    assert OWNER not in " ".join(sq.tokens_seen()), "the owner's token went to another user's server"
    assert "uses it now" not in done.stdout
    assert "not verified" in done.stdout, done.stdout


def test_live_omen_is_verified_and_reloads(tmp_path: Path) -> None:
    """What held keeps holding: the real OMEN proves itself and takes the reload."""
    cfg = _config(tmp_path, free_port())
    env = omen_env(tmp_path, OMEN_TOKEN=OWNER)
    omen = start_omen(cfg, env)
    try:
        done = omen_cli("provider", "add", "extra", "http://127.0.0.1:9/v1", "--kind", "openai", "--config", str(cfg),
                        env=env)
        assert done.returncode == 0, done.stderr
        assert "uses it now" in done.stdout, done.stdout
    finally:
        omen.stop()
