"""Security review of item 2: the owner check cannot be skipped by spelling or by timing.

- Loopback written another way (``0.0.0.0``, ``[::]``, ``[::ffff:127.0.0.1]``, ``127.1``,
  ``localhost.``) reaches the same listener, so it gets the same owner check.
- A paused local provider is revived by the re-prober when something listens again; a
  squatter that binds the port while the user's Ollama restarts must not be revived into
  receiving prompts before the trust loop runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from omen_local import local_trust
from omen_local.config import load_config
from omen_local.providers.base import is_loopback_url
from omen_local.providers.errors import ConnectFailed
from omen_local.routing.health import HealthBook
from omen_local.routing.reprobe import Reprober
from omen_local.service import OmenService

from .conftest import Squat, free_port, wait_for

SPELLINGS = ["http://0.0.0.0:{p}", "http://[::]:{p}", "http://[::ffff:127.0.0.1]:{p}", "http://127.1:{p}",
             "http://localhost.:{p}", "http://2130706433:{p}", "http://127.0.0.1:{p}"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_this_machine_is_loopback(spelling: str) -> None:
    assert is_loopback_url(spelling.format(p=11434))
    assert local_trust.is_loopback_host(spelling.format(p=1).split("//")[1].rsplit(":", 1)[0])


@pytest.mark.parametrize("url", ["http://10.0.0.1:11434", "https://api.openai.com/v1", "http://[::ffff:10.0.0.1]:1",
                                 "http://localhost.example.com:1", "http://127.evil.example:1"])
def test_other_hosts_are_not(url: str) -> None:
    assert not is_loopback_url(url)


def test_another_users_listener_is_distrusted_in_every_spelling(squat: Squat, attacker: str) -> None:
    sq = squat(free_port(), "0.0.0.0")  # a wildcard bind answers on every loopback spelling
    wait_for(lambda: bool(local_trust.listeners(sq.port).uids), "the squatter to listen")
    for spelling in SPELLINGS:
        why = local_trust.distrust(spelling.format(p=sq.port))
        assert why is not None and "belongs to another user" in why and attacker in why, spelling


async def _until(check: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


def test_a_squatter_on_a_paused_local_providers_port_is_not_revived(
        tmp_path: Path, squat: Squat, attacker: str) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[server]\nport = 0\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
                   f'[providers.ollama]\nkind = "ollama"\nbase_url = "http://127.0.0.1:{port}"\n')
    service = OmenService(load_config(cfg), metering=False)  # the re-prober as the service wires it

    async def run() -> None:
        health: HealthBook = service.health
        probes: list[bool] = []
        reprober: Reprober = service.reprober

        async def probe(host: str, p: int) -> bool:
            from omen_local.routing.reprobe import connects

            probes.append(await connects(host, p))
            return probes[-1]

        reprober._probe = probe  # count the probes; the real connect decides
        try:
            assert health.provider_failed(ConnectFailed("ollama", "cannot reach ollama"))
            sq = squat(port)
            wait_for(lambda: bool(local_trust.listeners(port).uids), "the squatter to listen")
            assert await _until(lambda: probes.count(True) >= 2, 10.0), probes  # it was seen listening...
            assert not health.provider_available("ollama")  # ...and not revived
            assert service._local_distrust("ollama") is not None
            sq.proc.kill()
            sq.proc.wait()
        finally:
            await reprober.close()

    asyncio.run(run())
