"""``omen`` (the real CLI, unchanged) with the benchmark's event-loop lag probe (``_lag.py``).

``python bench/_lagprobe.py OUT_FILE <omen arguments...>`` runs ``omen_local.cli.main`` with
those arguments; once the service has started, SIGUSR1 starts the probe and SIGUSR2 stops
it and writes the overshoots to OUT_FILE. Nothing in ``omen_local`` knows about it: it
wraps ``OmenService.start``, so it measures any checkout (``PYTHONPATH=DIR``).
"""

from __future__ import annotations

import sys
from typing import Any

from _lag import install

from omen_local import cli
from omen_local.service import OmenService


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    start = OmenService.start

    async def start_with_probe(self: OmenService, *args: Any, **kwargs: Any) -> None:
        await start(self, *args, **kwargs)
        install(out)

    OmenService.start = start_with_probe  # type: ignore[method-assign]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
