"""A paused local provider is used again as soon as something listens at its address."""

from __future__ import annotations

import asyncio
import socket

from omen_local.providers.errors import ConnectFailed
from omen_local.routing.health import HealthBook
from omen_local.routing.reprobe import FIRST_S, MAX_S, Reprober, connects
from tests.waiting import until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_restarted_local_server_is_used_by_the_next_probe() -> None:
    """Used within MAX_S (plus one connect) of listening: probes are never more than MAX_S
    apart, and the first probe that starts once the server listens revives it. Counted in
    probes and observed backoffs, not timed, so a loaded machine cannot fail it."""
    port = _free_port()
    delays: list[float] = []
    answers: list[bool] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(seconds)

    async def probe(host: str, port: int) -> bool:
        answers.append(await connects(host, port))
        return answers[-1]

    health = HealthBook(600.0)  # a long cool-down: only the re-probe can lift it in time
    reprober = Reprober(health, lambda: {"llama": f"http://127.0.0.1:{port}/v1"}, probe=probe, sleep=sleep)
    health.on_down = reprober.watch
    try:
        assert health.provider_failed(ConnectFailed("llama", "cannot reach llama"))
        assert not health.provider_available("llama")
        await until(lambda: len(answers) >= 2, "two probes of the closed port (the backoff at its cap)")
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        before = len(answers)
        try:
            await until(lambda: health.provider_available("llama"), "the re-probe to revive llama")
            assert answers[-1] and not any(answers[:before])
            assert len(answers) - before <= 2  # at most the probe under way at listen time missed it
            assert delays[:3] == [FIRST_S, MAX_S, MAX_S][: len(delays)] and max(delays) == MAX_S
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
