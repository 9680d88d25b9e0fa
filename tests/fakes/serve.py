"""Run a fake upstream as its own process: ``python -m tests.fakes.serve openai --port 0``.

Prints the base URL on the first line of stdout once it listens, then serves until it is
terminated (SIGTERM/SIGINT). Used where the code under test is not Python in this
process: the frozen bundle's smoke test, first-run scripts (``--port 11434`` plays Ollama).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .fake_anthropic import FakeAnthropic
from .fake_ollama import FakeOllama
from .fake_openai import FakeOpenAI


async def _serve(kind: str, host: str, port: int, models: list[str] | None, no_key: bool = False) -> None:
    fake: FakeOllama | FakeOpenAI | FakeAnthropic
    if kind == "ollama":
        fake = FakeOllama(models)
    elif kind == "openai":
        fake = FakeOpenAI(models)
        fake.require_key = not no_key
    else:
        fake = FakeAnthropic()
        if models is not None:
            fake.model_ids = models
    fake.bind = (host, port)
    async with fake:
        print(fake.url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C ends it
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve one fake upstream until terminated.")
    parser.add_argument("kind", choices=["openai", "ollama", "anthropic"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", help="comma-separated model names the fake lists ('' for none)")
    parser.add_argument("--no-key", action="store_true", help="openai: take requests without a key (a local server)")
    args = parser.parse_args(argv)
    models = None if args.models is None else [m for m in args.models.split(",") if m]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.kind, args.host, args.port, models, args.no_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
