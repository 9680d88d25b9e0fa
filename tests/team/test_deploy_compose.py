"""deploy/compose.yaml agrees with OMEN's config keys (Docker is not run here: its syntax and
names are checked, and the gateway's config is loaded by OMEN itself).

The compose file names three services; the gateway's mounted config must point its
[team] URLs at those services, with the user, database and passwords the compose file and
env.example give them, listen where the compose file publishes it, keep its data where
the volume is, take its keys from variables the service passes, and be a config that
``omen serve --team`` accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from omen_local.config import load_config
from omen_local.gateway import refusal

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def _env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / "env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _mount(service: dict[str, Any], target: str) -> str:
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return source
    raise AssertionError(f"nothing mounted at {target}: {service['volumes']}")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:?msg}`` and ``${NAME:-default}`` with ``env``'s values."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if env.get(name):
            return env[name]
        assert op != ":?", f"compose would refuse: {name} unset"
        return arg

    return re.sub(r"\$\{(\w+)(:\?|:-)?([^}]*)\}", one, value)


def _published(ports: list[str], env: dict[str, str]) -> set[tuple[str, str]]:
    """(address, port) of each published port: every one bound to a stated address."""
    out = set()
    for spec in ports:
        address, host_port, container_port = _interpolate(spec, env).split(":")
        assert host_port == container_port
        out.add((address, host_port))
    return out


def test_compose_services_and_the_gateway_config_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "gateway"}
    gateway = services["gateway"]
    command = gateway["command"]
    assert command[:3] == ["omen", "serve", "--team"]
    config_path = command[command.index("--config") + 1]
    source = _mount(gateway, config_path)
    env = _env_example()
    text = (DEPLOY / source).read_text(encoding="utf-8")
    assert env["POSTGRES_PASSWORD"] not in text and env["REDIS_PASSWORD"] not in text  # no secret in the file
    for name, value in gateway["environment"].items():  # the gateway's environment, as compose makes it
        monkeypatch.setenv(name, _interpolate(str(value), env))
    config = load_config(DEPLOY / source)
    assert refusal(config) is None  # `omen serve --team` starts with it
    assert set(gateway["depends_on"]) == {"postgres", "redis"}
    address = env["TEAM_ADDRESS"]
    assert address not in ("", "0.0.0.0", "::")

    team = config.team
    assert team is not None and team.redis_url is not None
    db = urlsplit(team.database_url)
    pg = services["postgres"]
    assert db.hostname == "postgres" and _published(pg["ports"], env) == {(address, str(db.port))}
    assert db.username == pg["environment"]["POSTGRES_USER"] and db.path == "/" + pg["environment"]["POSTGRES_DB"]
    assert "${POSTGRES_PASSWORD" in pg["environment"]["POSTGRES_PASSWORD"] and db.password == env["POSTGRES_PASSWORD"]
    rd = urlsplit(team.redis_url)
    assert rd.hostname == "redis" and _published(services["redis"]["ports"], env) == {(address, str(rd.port))}
    assert "${REDIS_PASSWORD" in services["redis"]["environment"]["REDIS_PASSWORD"]
    assert rd.password == env["REDIS_PASSWORD"]

    assert config.server.host == "0.0.0.0" and _published(gateway["ports"], env) == {(address, str(config.server.port))}
    assert _mount(gateway, str(config.data_dir)) in compose["volumes"]
    passed = set(gateway["environment"])
    for name, pc in config.providers.items():
        if pc.enabled:
            variables = {ref.split(":", 1)[1] for ref in pc.key if ref.startswith("env:")}
            assert variables and variables <= passed, (name, pc.key)
            assert variables <= set(env), (name, "env.example lists the keys")
    assert gateway["environment"]["OMEN_SECRETS"] == "file"
    dockerfile = (DEPLOY / gateway["build"]["dockerfile"].removeprefix("deploy/")).read_text(encoding="utf-8")
    assert "[team]" in dockerfile and config_path in dockerfile


def test_the_redis_service_command_starts_redis_with_the_password(tmp_path: Path) -> None:
    """The one fiddly line (YAML, compose's ``$$``, sh quoting, printf): run it with sh and a real
    redis-server, the image's entrypoint stood in for by a script that adds a free port and a dir."""
    import os
    import shutil
    import socket
    import subprocess
    import time

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    import redis

    service = _compose()["services"]["redis"]
    assert service["command"][:2] == ["sh", "-c"]
    script = service["command"][2].replace("$$", "$").replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shim = tmp_path / "bin" / "docker-entrypoint.sh"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "$@" --port {port} --bind 127.0.0.1 --dir {tmp_path} --save ""\n')
    shim.chmod(0o755)
    password = "pa ss'word$1"  # spaces, a quote and a dollar survive
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "REDIS_PASSWORD": password}
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "redis did not answer"
                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        # The healthcheck, as compose runs it (CMD-SHELL), redis-cli pointed at this port.
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        cli = shim.parent / "redis-cli"
        cli.write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {port} "$@"\n')
        cli.chmod(0o755)
        healthy = subprocess.run(["sh", "-c", check[1].replace("$$", "$")], env=env, capture_output=True, timeout=20)
        assert healthy.returncode == 0, healthy.stderr
        wrong = subprocess.run(["sh", "-c", check[1].replace("$$", "$")], env={**env, "REDIS_PASSWORD": "no"},
                               capture_output=True, timeout=20)
        assert wrong.returncode != 0
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, password="wrong", socket_timeout=2).ping()
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
