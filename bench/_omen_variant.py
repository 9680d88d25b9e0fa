"""OmenService with or without metering, for bench/metering.py's A/B run.

Run: ``python bench/_omen_variant.py CONFIG on|off``; prints ``READY <port>`` once listening
and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omen_local import gc_tuning
from omen_local.config import load_config
from omen_local.service import OmenService


async def main(config: str, metering: bool) -> None:
    service = OmenService(load_config(config), metering=metering)
    await service.start()
    gc_tuning.settle()  # as `omen serve` does once it serves
    print(f"READY {service.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.stop()


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main(sys.argv[1], sys.argv[2] == "on"))
