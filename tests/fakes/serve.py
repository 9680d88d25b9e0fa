"""Run a fake upstream as its own process: ``python -m tests.fakes.serve openai --port 0``.

Prints the base URL on the first line of stdout once it listens, then serves until it is
terminated (SIGTERM/SIGINT). Used where the code under test is not Python in this
process: the frozen bundle's smoke test, first-run scripts (``--port 11434`` plays Ollama), the real agent CLIs (``--control``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from .control import RuledAnthropic, RuledOllama, RuledOpenAI, Rules, control_app
from .fake_anthropic import FakeAnthropic
from .fake_ollama import FakeOllama
from .fake_openai import FakeOpenAI


async def _serve(
    kind: str, host: str, port: int, models: list[str] | None, no_key: bool = False, control: bool = False
) -> None:
    fake: FakeOllama | FakeOpenAI | FakeAnthropic
    rules = Rules()
    if kind == "ollama":
        fake = RuledOllama(rules, models) if control else FakeOllama(models)
    elif kind == "openai":
        fake = RuledOpenAI(rules, models) if control else FakeOpenAI(models)
        fake.require_key = not no_key
    else:
        fake = RuledAnthropic(rules) if control else FakeAnthropic()
        if models is not None:
            fake.model_ids = models
    fake.bind = (host, port)
    async with fake:
        print(fake.url, flush=True)
        runner: web.AppRunner | None = None
        if control:  # tests/fakes/control.py: rules and recorded requests, on a port of its own
            runner = web.AppRunner(control_app(rules, fake), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, 0)
            await site.start()
            print(f"CONTROL http://{host}:{site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C ends it
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if runner is not None:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve one fake upstream until terminated.")
    parser.add_argument("kind", choices=["openai", "ollama", "anthropic"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", help="comma-separated model names the fake lists ('' for none)")
    parser.add_argument("--no-key", action="store_true", help="openai: take requests without a key (a local server)")
    parser.add_argument("--control", action="store_true", help="print CONTROL <url> (tests/fakes/control.py) on line 2")
    args = parser.parse_args(argv)
    models = None if args.models is None else [m for m in args.models.split(",") if m]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.kind, args.host, args.port, models, args.no_key, args.control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
