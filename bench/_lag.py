"""An event-loop lag probe for the benchmark's servers (OMEN through ``_lagprobe.py``, the thin proxy).

``install(path)`` on a running loop makes two signals control it:

* ``SIGUSR1``: start sampling. A task sleeps 1 ms in a loop and records how late it wakes
  up (the overshoot, in ms): how long other callbacks held the loop meanwhile.
* ``SIGUSR2``: stop, and write the overshoots, one per line, to ``path`` (atomically).

It costs a wake-up per millisecond, so the benchmark runs it only in the runs that
measure the lag, never in the throughput runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from array import array

INTERVAL_S = 0.001


class Probe:
    def __init__(self, out: str) -> None:
        self.out = out
        self.samples = array("d")
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clock = time.perf_counter
        samples = self.samples
        while True:
            t = clock()
            await asyncio.sleep(INTERVAL_S)
            samples.append((clock() - t - INTERVAL_S) * 1000)

    def begin(self) -> None:
        if self.task is None:
            self.samples = array("d")
            self.task = asyncio.get_running_loop().create_task(self._run())

    def end(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(f"{x:.4f}" for x in self.samples))
        os.replace(tmp, self.out)


def install(out: str) -> Probe:
    """Attach a probe writing to ``out`` to the running loop's SIGUSR1/SIGUSR2."""
    probe = Probe(out)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, probe.begin)
    loop.add_signal_handler(signal.SIGUSR2, probe.end)
    return probe
