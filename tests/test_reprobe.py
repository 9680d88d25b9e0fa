"""A paused local provider is used again as soon as something listens at its address."""

from __future__ import annotations

import asyncio
import socket
import time

from omen_local.providers.errors import ConnectFailed
from omen_local.routing.health import HealthBook
from omen_local.routing.reprobe import Reprober


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(check: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_restarted_local_server_is_used_within_two_seconds_of_listening() -> None:
    port = _free_port()
    health = HealthBook(600.0)  # a long cool-down: only the re-probe can lift it in time
    reprober = Reprober(health, lambda: {"llama": f"http://127.0.0.1:{port}/v1"})
    health.on_down = reprober.watch
    try:
        assert health.provider_failed(ConnectFailed("llama", "cannot reach llama"))
        assert not health.provider_available("llama")
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        up = time.monotonic()
        try:
            assert await _until(lambda: health.provider_available("llama"), 5.0)
            assert time.monotonic() - up < 2.0
            assert health.get("llama").state == "unknown"  # the next request judges whether it serves
        finally:
            server.close()
            await server.wait_closed()
    finally:
        await reprober.close()


async def test_nothing_listening_keeps_the_pause_and_cloud_providers_are_not_probed() -> None:
    calls: list[tuple[str, int]] = []
    probed = asyncio.Event()

    async def probe(host: str, port: int) -> bool:
        calls.append((host, port))
        if len(calls) >= 3:
            probed.set()
        return False

    health = HealthBook(600.0)
    reprober = Reprober(health, lambda: {"llama": "http://127.0.0.1:8080/v1"}, probe=probe, first_s=0.01, max_s=0.02)
    health.on_down = reprober.watch
    try:
        health.provider_failed(ConnectFailed("groq", "cannot reach groq"))
        health.provider_failed(ConnectFailed("llama", "cannot reach llama"))
        health.provider_failed(ConnectFailed("llama", "cannot reach llama"))  # one watcher, not two
        await asyncio.wait_for(probed.wait(), 5.0)
        assert set(calls) == {("127.0.0.1", 8080)}
        assert not health.provider_available("llama") and not health.provider_available("groq")
    finally:
        await reprober.close()
