"""Back as soon as it is back: a paused local provider is re-probed until it answers.

A local model server that was restarted (Ollama after an update, llama.cpp with another
model) refuses connections for a few seconds; the provider is then paused for the whole
cool-down, and requests get 503 while the server is already up again. While a local
provider is paused, this opens a TCP connection to its address (the cheapest thing that
says "something listens again"), with a backoff from ``FIRST_S`` up to ``MAX_S``, and
lifts the pause at the first success. Cloud providers keep their cool-down: probing them
costs the network and their rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from .health import HealthBook

__all__ = ["FIRST_S", "MAX_S", "Reprober"]

log = logging.getLogger(__name__)

FIRST_S = 0.5
MAX_S = 1.0  # a server that comes up is used within MAX_S plus one connect
CONNECT_S = 0.5


def address(base_url: str) -> tuple[str, int] | None:
    parts = urlsplit(base_url)
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def connects(host: str, port: int) -> bool:
    """Does something accept a TCP connection at ``host:port`` now (within ``CONNECT_S``)?"""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class Reprober:
    """One re-probe task per paused local provider (``watch`` is HealthBook's ``on_down``)."""

    def __init__(
        self,
        health: HealthBook,
        local_urls: Callable[[], Mapping[str, str]],
        *,
        probe: Callable[[str, int], Awaitable[bool]] | None = None,
        distrust: Callable[[str], str | None] | None = None,
        first_s: float = FIRST_S,
        max_s: float = MAX_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``local_urls()``: the base URL of each local provider, as the current config says;
        ``distrust(provider)``: why its listener must not get requests (another user's), or None;
        ``sleep``: the wait between probes (a test observes the backoff through it)."""
        self.health = health
        self._distrust = distrust
        self.local_urls = local_urls
        self._probe = probe
        self.first_s = first_s
        self.max_s = max_s
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, provider: str) -> None:
        """``provider`` was paused: re-probe it if it is local and not already watched."""
        url = self.local_urls().get(provider)
        if url is None or provider in self._tasks:
            return
        where = address(url)
        if where is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._run(provider, *where))
        except RuntimeError:  # no loop (a synchronous caller): the cool-down applies
            return
        self._tasks[provider] = task
        task.add_done_callback(lambda _: self._tasks.pop(provider, None))

    async def _connects(self, host: str, port: int) -> bool:
        if self._probe is not None:
            return await self._probe(host, port)
        return await connects(host, port)

    async def _trusted(self, provider: str) -> bool:
        """Something listens again, but a squatter may have bound the port while the user's
        server restarted: revive only a listener the owner check accepts."""
        if self._distrust is None:
            return True
        why = await asyncio.to_thread(self._distrust, provider)
        if why is not None:
            log.warning("%s: a server listens again but is not used: %s", provider, why)
        return why is None

    async def _run(self, provider: str, host: str, port: int) -> None:
        delay = self.first_s
        while not self.health.provider_available(provider):
            await self._sleep(delay)  # backoff between probes, not synchronisation
            if self.health.provider_available(provider):
                return  # the cool-down ended or a request got through meanwhile
            if await self._connects(host, port) and await self._trusted(provider):
                log.info("%s answers again at %s:%d: in use again", provider, host, port)
                self.health.revive(provider)
                return
            delay = min(delay * 2, self.max_s)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
