"""A Redis that flaps (its data kept, the link cut and restored 40 times) must not grant a
fresh allowance per outage: the allowances end only when Redis has what they admitted."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from omen_local.metering import rollup as r
from omen_local.metering.ledger import AllowanceSpent
from omen_local.metering.redis_ledger import ALLOWANCE_SHARE, RedisLedger

from .servers import start_redis
from .test_redis_ledger import T0, Source


class _Link:
    """A TCP link to Redis that can be cut (connections reset, new ones refused), Redis untouched."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers |= {client_w, up_w}
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    async def up(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def test_a_flapping_redis_grants_one_allowance_not_one_per_outage(tmp_path: Path) -> None:
    rd = start_redis(tmp_path / "redis")
    try:
        link = _Link(rd.port)
        port = await link.up()
        spent = 0.0
        day = int(T0 // r.DAY)
        source = Source({})
        ledger = RedisLedger(f"redis://:{rd.password}@127.0.0.1:{port}/0", lambda: T0, source=source)
        limits = {"daily_usd": 10.0}
        try:
            await ledger.reserve("a", [(("user", "ann"), limits)], 0.0, 1)  # seen: 10 USD left
            ledger.settle("a", 0.0, 1)
            await ledger.drain()
            for flap in range(40):
                await link.down()
                behind = ledger.health()["charges_waiting"] > 0  # Redis misses the last outage's spend
                i = 0
                while True:  # spend what this outage allows
                    try:
                        await ledger.reserve(f"o{flap}.{i}", [(("user", "ann"), limits)], 0.1, 1)
                    except AllowanceSpent:
                        break
                    ledger.settle(f"o{flap}.{i}", 0.1, 1)
                    spent += 0.1
                    source.rows = {("user", "ann"): [(day, spent, 0)]}  # the usage store has every charge
                    i += 1
                await ledger.drain()
                assert not (behind and i > 0), f"outage {flap}: a new allowance while Redis missed the last one's charges"
                await link.up(port)  # back for a moment: one admission goes through Redis, then it flaps again
                await ledger.reserve(f"p{flap}", [(("user", "ann"), limits)], 0.0, 1)
                ledger.settle(f"p{flap}", 0.0, 1)
                await ledger.drain()
            # The documented bound (docs/team.md): a new allowance only once Redis has every
            # charge, from the room left after them, so the quota itself is never passed.
            assert spent <= 10.0 + 0.1 + 1e-9, spent
            assert spent >= 10.0 * ALLOWANCE_SHARE - 0.1  # the first outage's allowance was spent
        finally:
            await ledger.aclose()
    finally:
        rd.stop()
